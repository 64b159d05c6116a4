//! `{{name}}` placeholder substitution. No logic, no escaping: templates are plain text per channel.

use std::collections::HashMap;

/// Replaces every `{{name}}` (spaces inside the braces allowed) with `variables[name]`.
/// Returns the first missing variable's name as the error. An unclosed `{{` is kept literally.
pub fn render(template: &str, variables: &HashMap<String, String>) -> Result<String, String> {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        let Some(len) = rest[start + 2..].find("}}") else {
            break;
        };
        out.push_str(&rest[..start]);
        let name = rest[start + 2..start + 2 + len].trim();
        match variables.get(name) {
            Some(value) => out.push_str(value),
            None => return Err(name.to_owned()),
        }
        rest = &rest[start + 2 + len + 2..];
    }
    out.push_str(rest);
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

    #[test]
    fn substitutes_and_reports_missing() {
        let v = vars(&[("name", "Ana"), ("n", "3")]);
        assert_eq!(
            render("Hi {{name}}, {{ n }} new", &v),
            Ok("Hi Ana, 3 new".into())
        );
        assert_eq!(render("no placeholders", &v), Ok("no placeholders".into()));
        assert_eq!(render("{{missing}}", &v), Err("missing".into()));
        assert_eq!(
            render("open {{ never closed", &v),
            Ok("open {{ never closed".into())
        );
        assert_eq!(render("{{name}}{{name}}", &v), Ok("AnaAna".into()));
        assert_eq!(render("olá {{name}} ✓", &v), Ok("olá Ana ✓".into()));
    }
}
