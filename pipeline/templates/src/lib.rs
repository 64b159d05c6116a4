//! Notification templates: Jinja syntax (`Hi {{ name }}`, `{% if vip %}…{% endif %}`, filters
//! such as `{{ amount | round(2) }}`), rendered by minijinja. Why a Jinja-like engine rather than
//! Liquid: operators know the syntax from e-mail tools, minijinja is sandboxed (a template
//! cannot read files or call out), reports the variables a template uses, and bounds a render's
//! work ("fuel"), which a template uploaded by a tenant needs.
//!
//! A template is checked when it is uploaded ([`variables_of`]: its syntax and the variables it
//! uses) and again when a notification is rendered ([`render`]): a variable the request does not
//! give is [`RenderError::Missing`] naming it, never an empty string. Output is plain text; the
//! e-mail connector escapes everything it puts into the HTML part.

use std::collections::HashMap;
use std::io::Write;
use std::sync::OnceLock;

use minijinja::{Environment, UndefinedBehavior};

/// How much work one render may do (minijinja's fuel: roughly instructions executed).
const FUEL: u64 = 100_000;

/// Why a template did not render.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RenderError {
    /// The template uses a variable the request does not give.
    Missing(String),
    /// The rendered text would be longer than allowed (bytes).
    TooLong(usize),
    /// Not a valid template, or it failed while rendering (what, and where).
    Invalid(String),
}

impl std::fmt::Display for RenderError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RenderError::Missing(name) => write!(f, "needs variable {name:?}"),
            RenderError::TooLong(max) => write!(f, "renders longer than {max} bytes"),
            RenderError::Invalid(why) => write!(f, "{why}"),
        }
    }
}

fn environment() -> &'static Environment<'static> {
    static ENV: OnceLock<Environment<'static>> = OnceLock::new();
    ENV.get_or_init(|| {
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        env.set_fuel(Some(FUEL));
        env
    })
}

fn invalid(e: &minijinja::Error) -> RenderError {
    let at = e.line().map(|l| format!(" (line {l})")).unwrap_or_default();
    RenderError::Invalid(format!(
        "{}{at}",
        e.detail().unwrap_or(&e.kind().to_string())
    ))
}

/// The variables `template` uses, sorted; or why it is not a valid template.
pub fn variables_of(template: &str) -> Result<Vec<String>, RenderError> {
    let compiled = environment()
        .template_from_str(template)
        .map_err(|e| invalid(&e))?;
    Ok(used(&compiled))
}

/// The names a template reads that the engine does not define itself (`range`, `dict`, …).
fn used(compiled: &minijinja::Template<'_, '_>) -> Vec<String> {
    let env = environment();
    let mut names: Vec<String> = compiled
        .undeclared_variables(false)
        .into_iter()
        .filter(|name| env.globals().all(|(global, _)| global != name.as_str()))
        .collect();
    names.sort();
    names
}

/// Longest template parts, before rendering (bytes).
pub mod limits {
    /// Template id and locale.
    pub const NAME: usize = 64;
    /// Title.
    pub const TITLE: usize = 1_024;
    /// Body.
    pub const BODY: usize = 16 * 1_024;
    /// Action URL.
    pub const URL: usize = 2_048;
}

/// A template part refused: which field, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// `template_id`, `locale`, `title`, `body` or `action_url`.
    pub field: &'static str,
    /// Why.
    pub why: String,
}

/// The parts of a template to check before it is stored.
#[derive(Debug, Clone, Copy)]
pub struct Parts<'a> {
    #[allow(missing_docs)]
    pub template_id: &'a str,
    #[allow(missing_docs)]
    pub locale: &'a str,
    #[allow(missing_docs)]
    pub title: &'a str,
    #[allow(missing_docs)]
    pub body: &'a str,
    #[allow(missing_docs)]
    pub action_url: &'a str,
}

/// A name as template ids and subscription topics are: 1 to [`limits::NAME`] bytes of
/// `A-Z a-z 0-9 . _ -`.
pub fn is_name(v: &str) -> bool {
    !v.is_empty()
        && v.len() <= limits::NAME
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
}

/// Checks a template before it is stored (the upload API and the spreadsheet import use it):
/// names, sizes and every part's syntax. Answers the variables it uses, sorted.
pub fn check(parts: Parts<'_>) -> Result<Vec<String>, Refusal> {
    let refuse = |field, why: String| Refusal { field, why };
    if !is_name(parts.template_id) {
        return Err(refuse(
            "template_id",
            "must be 1 to 64 of A-Z a-z 0-9 . _ -".into(),
        ));
    }
    if !is_name(parts.locale) {
        return Err(refuse(
            "locale",
            "must be a BCP 47 tag such as en or pt-BR".into(),
        ));
    }
    let mut variables = std::collections::BTreeSet::new();
    for (field, text, max) in [
        ("title", parts.title, limits::TITLE),
        ("body", parts.body, limits::BODY),
        ("action_url", parts.action_url, limits::URL),
    ] {
        if text.len() > max {
            return Err(refuse(field, format!("is longer than {max} bytes")));
        }
        variables.extend(variables_of(text).map_err(|e| refuse(field, e.to_string()))?);
    }
    if parts.title.trim().is_empty() && parts.body.trim().is_empty() {
        return Err(refuse("body", "title and body are both empty".into()));
    }
    Ok(variables.into_iter().collect())
}

/// A writer that refuses to grow past `max` bytes.
struct Bounded {
    text: Vec<u8>,
    max: usize,
    over: bool,
}

impl Write for Bounded {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        if self.text.len() + bytes.len() > self.max {
            self.over = true;
            return Err(std::io::Error::other("too long"));
        }
        self.text.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Renders `template` with `variables`, stopping as soon as the text would exceed `max` bytes.
pub fn render(
    template: &str,
    variables: &HashMap<String, String>,
    max: usize,
) -> Result<String, RenderError> {
    let compiled = environment()
        .template_from_str(template)
        .map_err(|e| invalid(&e))?;
    if let Some(missing) = used(&compiled)
        .into_iter()
        .find(|v| !variables.contains_key(v))
    {
        return Err(RenderError::Missing(missing));
    }
    let mut out = Bounded {
        text: Vec::with_capacity(template.len().min(max)),
        max,
        over: false,
    };
    let context = minijinja::Value::from_object(variables.clone());
    if let Err(e) = compiled.render_captured_to(context, &mut out) {
        return Err(if out.over {
            RenderError::TooLong(max)
        } else {
            invalid(&e)
        });
    }
    String::from_utf8(out.text).map_err(|_| RenderError::Invalid("not UTF-8".into()))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    const MAX: usize = 1_000;

    #[test]
    fn substitutes_and_names_a_missing_variable() {
        let v = vars(&[("name", "Ana"), ("n", "3")]);
        assert_eq!(
            render("Hi {{name}}, {{ n }} new", &v, MAX),
            Ok("Hi Ana, 3 new".into())
        );
        assert_eq!(
            render("no placeholders", &v, MAX),
            Ok("no placeholders".into())
        );
        assert_eq!(
            render("{{ name }} and {{ missing }}", &v, MAX),
            Err(RenderError::Missing("missing".into()))
        );
        assert_eq!(render("olá {{name}} ✓", &v, MAX), Ok("olá Ana ✓".into()));
        // Plain text: nothing is escaped here (the e-mail connector escapes its HTML part).
        let html = vars(&[("name", "<b>Ana</b>")]);
        assert_eq!(render("{{ name }}", &html, MAX), Ok("<b>Ana</b>".into()));
    }

    #[test]
    fn logic_and_filters_work_and_variables_are_listed() {
        let v = vars(&[("vip", "yes"), ("name", "ana")]);
        let t = "{% if vip == 'yes' %}Dear {{ name | upper }}{% else %}Hi{% endif %}";
        assert_eq!(render(t, &v, MAX), Ok("Dear ANA".into()));
        assert_eq!(
            variables_of(t),
            Ok(vec!["name".to_owned(), "vip".to_owned()])
        );
        assert_eq!(
            variables_of("{% for x in [1, 2] %}{{ x }}{% endfor %}"),
            Ok(vec![])
        );
    }

    #[test]
    fn bad_templates_say_what_and_where() {
        let e = variables_of("line one\n{{ name ").unwrap_err();
        assert!(
            matches!(&e, RenderError::Invalid(why) if why.contains("line 2")),
            "{e:?}"
        );
        assert!(matches!(
            variables_of("{% if %}"),
            Err(RenderError::Invalid(_))
        ));
        let v = vars(&[("n", "x")]);
        assert!(matches!(
            render("{{ n + 1 }}", &v, MAX),
            Err(RenderError::Invalid(_))
        ));
    }

    #[test]
    fn output_and_work_are_bounded() {
        let v = vars(&[("x", &"y".repeat(400))]);
        assert!(render(&"{{x}}".repeat(3), &v, 1_200).is_ok());
        assert_eq!(
            render(&"{{x}}".repeat(4), &v, 1_200),
            Err(RenderError::TooLong(1_200))
        );
        assert_eq!(
            render(&"z".repeat(1_201), &v, 1_200),
            Err(RenderError::TooLong(1_200))
        );
        // A loop that would run for ever runs out of fuel.
        let endless =
            "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}";
        let r = render(endless, &v, 1_200);
        assert!(matches!(r, Err(RenderError::Invalid(_))), "{r:?}");
    }
}
