//! `{{name}}` placeholder substitution. No logic, no escaping: templates are plain text per channel.

use std::collections::HashMap;

/// Why a template did not render.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RenderError {
    /// The template uses a variable the request does not give.
    Missing(String),
    /// The rendered text would be longer than allowed (bytes).
    TooLong(usize),
}

/// Replaces every `{{name}}` (spaces inside the braces allowed) with `variables[name]`, stopping
/// as soon as the text would exceed `max` bytes. An unclosed `{{` is kept literally.
pub fn render(
    template: &str,
    variables: &HashMap<String, String>,
    max: usize,
) -> Result<String, RenderError> {
    let mut out = String::with_capacity(template.len().min(max));
    let mut rest = template;
    let push = |out: &mut String, s: &str| {
        if out.len() + s.len() > max {
            return Err(RenderError::TooLong(max));
        }
        out.push_str(s);
        Ok(())
    };
    while let Some(start) = rest.find("{{") {
        let Some(len) = rest[start + 2..].find("}}") else {
            break;
        };
        push(&mut out, &rest[..start])?;
        let name = rest[start + 2..start + 2 + len].trim();
        match variables.get(name) {
            Some(value) => push(&mut out, value)?,
            None => return Err(RenderError::Missing(name.to_owned())),
        }
        rest = &rest[start + 2 + len + 2..];
    }
    push(&mut out, rest)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    const MAX: usize = 1_000;

    #[test]
    fn substitutes_and_reports_missing() {
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
            render("{{missing}}", &v, MAX),
            Err(RenderError::Missing("missing".into()))
        );
        assert_eq!(
            render("open {{ never closed", &v, MAX),
            Ok("open {{ never closed".into())
        );
        assert_eq!(render("{{name}}{{name}}", &v, MAX), Ok("AnaAna".into()));
        assert_eq!(render("olá {{name}} ✓", &v, MAX), Ok("olá Ana ✓".into()));
    }

    #[test]
    fn stops_at_the_limit_without_building_the_whole_text() {
        let v = vars(&[("x", &"y".repeat(400))]);
        // Three copies fit in 1,200 bytes, four would not.
        assert!(render(&"{{x}}".repeat(3), &v, 1_200).is_ok());
        assert_eq!(
            render(&"{{x}}".repeat(1_000_000), &v, 1_200),
            Err(RenderError::TooLong(1_200))
        );
        assert_eq!(
            render(&"z".repeat(1_201), &v, 1_200),
            Err(RenderError::TooLong(1_200))
        );
    }
}
