//! A batch of writes ([`herald_store::Store::write_many`]): one immediate transaction per month
//! file the batch touches, instead of one commit per row.

use std::collections::BTreeMap;

use herald_store::{Month, Write};
use rusqlite::{Transaction, TransactionBehavior};

use super::inbox::insert_inbox_entry;
use super::notifications::{insert_event, insert_notification};
use crate::error::Result;
use crate::store::Inner;

/// The time that files a write in its month.
fn filed_at(write: &Write) -> i64 {
    match write {
        Write::Notification(n) => n.created_at_ms,
        Write::DeliveryEvent(e) => e.at_ms,
        Write::InboxEntry(e) => e.created_at_ms,
    }
}

impl Inner {
    pub(crate) fn write_many(&self, writes: &[Write]) -> Result<()> {
        let now = self.now();
        let mut by_month: BTreeMap<Month, Vec<&Write>> = BTreeMap::new();
        for write in writes {
            let at = filed_at(write);
            if self.retention.keeps(at, now) {
                by_month.entry(Month::of_ms(at)).or_default().push(write);
            }
        }
        for (month, writes) in by_month {
            self.in_month(month.start_ms(), |c| {
                // The write lock first, as for a single inbox entry: write-order numbers follow
                // commit order.
                let tx = Transaction::new_unchecked(c, TransactionBehavior::Immediate)?;
                for write in writes {
                    match write {
                        Write::Notification(n) => insert_notification(&tx, n)?,
                        Write::DeliveryEvent(e) => insert_event(&tx, e)?,
                        Write::InboxEntry(e) => insert_inbox_entry(&tx, e)?,
                    }
                }
                tx.commit()?;
                Ok(())
            })?;
        }
        Ok(())
    }
}
