//! The ingress's tables: idempotency keys (a lightweight transaction) and the outbox.

use std::ops::ControlFlow;

use herald_store::{IdempotencyClaim, IdempotencyRecord, OutboxRecord};

use crate::cql::{Lwt, exec, first, lwt, scan};
use crate::store::Inner;
use crate::tiers::WithTtl;
use crate::{Error, Result};

/// How long an idempotency key is remembered (seconds): see `claim_idempotency_key`.
pub(crate) const IDEMPOTENCY_KEY_TTL_SECONDS: i32 = 32 * 24 * 3600;

type IdempotencyRow = (String, String, String, String, i64);
type OutboxRow = (String, String, String, Vec<u8>, Vec<u8>, Vec<u8>, i64);

impl Inner {
    /// `INSERT ... IF NOT EXISTS`: of two concurrent claims exactly one applies. The loser
    /// reads the winner's record from the transaction's answer, or with a serial read.
    ///
    /// Claims a key for 32 days: longer than the delivery ledger keeps an outcome (30 days).
    /// A key reused after it expired names the same notification id, and so the same delivery
    /// ids; were the ledger to outlive the key, the new request would be answered with the old
    /// delivery's outcome and never sent.
    pub(crate) async fn claim_idempotency_key(
        &self,
        r: &IdempotencyRecord,
    ) -> Result<IdempotencyClaim> {
        let st = &self.st.shared;
        let values = WithTtl {
            row: (
                r.tenant.as_str(),
                r.key.as_str(),
                r.request_hash.as_str(),
                r.notification_id.as_str(),
                r.at_ms,
            ),
            ttl: IDEMPOTENCY_KEY_TTL_SECONDS,
        };
        let answer = lwt(&self.session, &st.claim_idempotency_key, values).await?;
        if answer.applied {
            return Ok(IdempotencyClaim::Claimed);
        }
        if let Some(first) = claimed_record(&answer) {
            return Ok(IdempotencyClaim::Existing(first));
        }
        let row: Option<IdempotencyRow> = first(
            &self.session,
            &st.select_idempotency_key,
            (r.tenant.as_str(), r.key.as_str()),
        )
        .await?;
        let (tenant, key, request_hash, notification_id, at_ms) = row.ok_or_else(|| {
            Error::Decode("an idempotency key was taken but cannot be read back".into())
        })?;
        Ok(IdempotencyClaim::Existing(IdempotencyRecord {
            tenant,
            key,
            request_hash,
            notification_id,
            at_ms,
        }))
    }

    /// Keeps the first record for `(owner, id)`, like the other backends (a replayed put with
    /// another timestamp must not queue the request twice).
    pub(crate) async fn outbox_put(&self, r: &OutboxRecord) -> Result<()> {
        let st = &self.st.shared;
        let known: Option<(i64,)> = first(
            &self.session,
            &st.select_outbox_by_id,
            (r.owner.as_str(), r.id.as_str()),
        )
        .await?;
        if known.is_some() {
            return Ok(());
        }
        // The owner first, so a live instance finds this outbox should its owner never return;
        // then the row: a crash between the two writes leaves a row `remove` cannot find by
        // id, but `pending` still returns it and the replay is idempotent downstream.
        exec(&self.session, &st.insert_outbox_owner, (r.owner.as_str(),)).await?;
        let headers = r.headers_blob();
        let row = (
            r.owner.as_str(),
            r.created_at_ms,
            r.id.as_str(),
            r.topic.as_str(),
            r.key.as_slice(),
            r.payload.as_slice(),
            headers.as_slice(),
        );
        exec(&self.session, &st.insert_outbox, row).await?;
        let pointer = (r.owner.as_str(), r.id.as_str(), r.created_at_ms);
        exec(&self.session, &st.insert_outbox_by_id, pointer).await
    }

    pub(crate) async fn outbox_pending(
        &self,
        owner: &str,
        limit: usize,
    ) -> Result<Vec<OutboxRecord>> {
        let mut out = Vec::new();
        if limit == 0 {
            return Ok(out);
        }
        scan(
            &self.session,
            &self.st.shared.select_outbox,
            (owner,),
            limit,
            |row: OutboxRow| {
                let (owner, id, topic, key, payload, headers, created_at_ms) = row;
                out.push(OutboxRecord {
                    owner,
                    id,
                    topic,
                    key,
                    payload,
                    headers: OutboxRecord::parse_headers_blob(&headers)
                        .ok_or_else(|| crate::error::corrupt("malformed outbox headers"))?,
                    created_at_ms,
                });
                Ok(if out.len() >= limit {
                    ControlFlow::Break(())
                } else {
                    ControlFlow::Continue(())
                })
            },
        )
        .await?;
        Ok(out)
    }

    pub(crate) async fn outbox_owners(&self) -> Result<Vec<String>> {
        let mut owners = Vec::new();
        scan(
            &self.session,
            &self.st.shared.select_outbox_owners,
            (),
            10_000,
            |(owner,): (String,)| {
                owners.push(owner);
                Ok(ControlFlow::Continue(()))
            },
        )
        .await?;
        Ok(owners)
    }

    /// Three lightweight transactions, tried in turn: take a lease nobody has, take one that
    /// expired, renew one this holder has.
    pub(crate) async fn outbox_lease(
        &self,
        owner: &str,
        holder: &str,
        now_ms: i64,
        until_ms: i64,
    ) -> Result<bool> {
        let st = &self.st.shared;
        if lwt(
            &self.session,
            &st.take_fresh_lease,
            (owner, holder, until_ms),
        )
        .await?
        .applied
        {
            return Ok(true);
        }
        let expired = (holder, until_ms, owner, now_ms);
        if lwt(&self.session, &st.take_expired_lease, expired)
            .await?
            .applied
        {
            return Ok(true);
        }
        Ok(
            lwt(&self.session, &st.renew_lease, (until_ms, owner, holder))
                .await?
                .applied,
        )
    }

    pub(crate) async fn outbox_remove(&self, owner: &str, id: &str) -> Result<()> {
        let st = &self.st.shared;
        let known: Option<(i64,)> =
            first(&self.session, &st.select_outbox_by_id, (owner, id)).await?;
        let Some((created_at_ms,)) = known else {
            return Ok(());
        };
        exec(&self.session, &st.delete_outbox, (owner, created_at_ms, id)).await?;
        exec(&self.session, &st.delete_outbox_by_id, (owner, id)).await
    }
}

/// The winning claim as the transaction answered it (ScyllaDB returns the existing row).
fn claimed_record(answer: &Lwt) -> Option<IdempotencyRecord> {
    Some(IdempotencyRecord {
        tenant: answer.text("tenant")?,
        key: answer.text("key")?,
        request_hash: answer.text("request_hash")?,
        notification_id: answer.text("notification_id")?,
        at_ms: answer.bigint("at_ms")?,
    })
}
