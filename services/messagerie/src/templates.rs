//! The French email catalogue: one plain-text and one HTML template per email, as files under
//! `services/messagerie/templates/` (compiled into the binary). The first line of a `.txt`
//! template is the subject, then a blank line, then the body. HTML templates are auto-escaped:
//! every value a user typed (motivations, messages, procedure titles) is HTML-escaped there.
//! Subjects go through [`single_line`], so no field can inject a header.

use minijinja::{Environment, Value};

/// Every template, by name: (text, HTML).
const TEMPLATES: &[(&str, &str, &str)] = &[
    (
        "dossier_brouillon",
        include_str!("../templates/dossier_brouillon.txt"),
        include_str!("../templates/dossier_brouillon.html"),
    ),
    (
        "dossier_depose",
        include_str!("../templates/dossier_depose.txt"),
        include_str!("../templates/dossier_depose.html"),
    ),
    (
        "dossier_en_instruction",
        include_str!("../templates/dossier_en_instruction.txt"),
        include_str!("../templates/dossier_en_instruction.html"),
    ),
    (
        "dossier_accepte",
        include_str!("../templates/dossier_accepte.txt"),
        include_str!("../templates/dossier_accepte.html"),
    ),
    (
        "dossier_refuse",
        include_str!("../templates/dossier_refuse.txt"),
        include_str!("../templates/dossier_refuse.html"),
    ),
    (
        "dossier_sans_suite",
        include_str!("../templates/dossier_sans_suite.txt"),
        include_str!("../templates/dossier_sans_suite.html"),
    ),
    (
        "dossier_reexamine",
        include_str!("../templates/dossier_reexamine.txt"),
        include_str!("../templates/dossier_reexamine.html"),
    ),
    (
        "dossier_en_construction",
        include_str!("../templates/dossier_en_construction.txt"),
        include_str!("../templates/dossier_en_construction.html"),
    ),
    (
        "dossier_a_corriger",
        include_str!("../templates/dossier_a_corriger.txt"),
        include_str!("../templates/dossier_a_corriger.html"),
    ),
    (
        "nouveau_message",
        include_str!("../templates/nouveau_message.txt"),
        include_str!("../templates/nouveau_message.html"),
    ),
    (
        "invitation",
        include_str!("../templates/invitation.txt"),
        include_str!("../templates/invitation.html"),
    ),
    (
        "avis_demande",
        include_str!("../templates/avis_demande.txt"),
        include_str!("../templates/avis_demande.html"),
    ),
    (
        "notice",
        include_str!("../templates/notice.txt"),
        include_str!("../templates/notice.html"),
    ),
    (
        "digest",
        include_str!("../templates/digest.txt"),
        include_str!("../templates/digest.html"),
    ),
    (
        "contact_brouillon",
        include_str!("../templates/contact_brouillon.txt"),
        include_str!("../templates/contact_brouillon.html"),
    ),
];

/// A rendered email.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    /// Template name.
    pub template: String,
    /// Subject, one line.
    pub subject: String,
    /// Plain-text body.
    pub text: String,
    /// HTML body (user content escaped).
    pub html: String,
}

/// The compiled catalogue.
#[derive(Debug)]
pub struct Catalogue {
    env: Environment<'static>,
}

impl Default for Catalogue {
    fn default() -> Self {
        Self::new()
    }
}

impl Catalogue {
    /// Compiles every template; a broken template is a build defect, caught by the unit tests.
    pub fn new() -> Self {
        let mut env = Environment::new();
        // `.html` names are HTML-escaped (minijinja's default callback); `.txt` are not.
        env.set_keep_trailing_newline(false);
        env.add_template("layout.html", include_str!("../templates/layout.html"))
            .unwrap_or_else(|e| panic!("layout.html: {e}"));
        for (name, text, html) in TEMPLATES {
            // The subject line is its own template, so that a value with a line break cannot
            // move text between the subject and the body.
            let (subject, body) = text.split_once('\n').unwrap_or((text, ""));
            env.add_template_owned(format!("{name}.subject"), subject.to_owned())
                .unwrap_or_else(|e| panic!("{name}.txt (subject): {e}"));
            env.add_template_owned(format!("{name}.txt"), body.to_owned())
                .unwrap_or_else(|e| panic!("{name}.txt: {e}"));
            env.add_template_owned(format!("{name}.html"), *html)
                .unwrap_or_else(|e| panic!("{name}.html: {e}"));
        }
        Self { env }
    }

    /// Renders `name` with `ctx`.
    pub fn render(&self, name: &str, ctx: Value) -> Result<Rendered, minijinja::Error> {
        let subject = self
            .env
            .get_template(&format!("{name}.subject"))?
            .render(&ctx)?;
        let subject = single_line(&subject);
        let body = self
            .env
            .get_template(&format!("{name}.txt"))?
            .render(&ctx)?;
        let html_ctx = minijinja::context! { subject => subject.clone(), ..ctx };
        let html = self
            .env
            .get_template(&format!("{name}.html"))?
            .render(&html_ctx)?;
        Ok(Rendered {
            template: name.to_owned(),
            subject,
            text: tidy(&body),
            html,
        })
    }
}

/// A header-safe value: control characters (CR, LF, tabs…) become spaces, runs of spaces
/// collapse, at most 250 characters.
pub fn single_line(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    let mut space = false;
    for c in value.chars() {
        if c.is_control() || c.is_whitespace() {
            space = !out.is_empty();
        } else {
            if space {
                out.push(' ');
                space = false;
            }
            out.push(c);
        }
    }
    out.chars().take(250).collect()
}

/// Trims the blank lines a template leaves at the start and collapses runs of three or more
/// line breaks that optional sections leave behind.
fn tidy(body: &str) -> String {
    let mut out = String::with_capacity(body.len());
    let mut blank = 0;
    for line in body.trim_start_matches(['\n', '\r']).lines() {
        if line.trim().is_empty() {
            blank += 1;
            if blank > 1 {
                continue;
            }
        } else {
            blank = 0;
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out.trim_end().to_owned() + "\n"
}

#[cfg(test)]
mod tests {
    use super::*;
    use minijinja::context;

    fn ctx() -> Value {
        context! {
            numero => 42,
            demarche => "Mois sans tabac 2024 – Projet",
            date => "27/11/2026",
            motivation => "Projet <b>conforme</b>.",
            justificatif => "decision.pdf",
            count => 1,
            inviteur => "marie@example.org",
            instructeur => "paul@example.org",
            message => "Bonjour <script>alert(1)</script>",
            raison => "une pièce manque",
            titre => "Nouveau dossier déposé",
            phrase => "Un dossier a été déposé.",
            sujet => "Relance",
            items => vec![context! { titre => "Nouveau message", numero => 1, demarche => "D", date => "27/11/2026 10:00" }],
        }
    }

    #[test]
    fn every_template_renders_with_a_french_subject_and_both_bodies() {
        let catalogue = Catalogue::new();
        for (name, _, _) in TEMPLATES {
            let r = catalogue.render(name, ctx()).unwrap();
            assert!(!r.subject.is_empty(), "{name}");
            assert!(!r.subject.contains('\n'), "{name}");
            assert!(r.text.starts_with("Bonjour"), "{name}: {}", r.text);
            assert!(r.html.contains("<p>Bonjour,</p>"), "{name}");
            assert!(r.text.contains("L'équipe Mois sans tabac"), "{name}");
        }
    }

    #[test]
    fn subjects_follow_the_wording_of_ds() {
        let c = Catalogue::new();
        let s = |n: &str| c.render(n, ctx()).unwrap().subject;
        assert_eq!(
            s("dossier_depose"),
            "Votre dossier n° 42 a bien été déposé (Mois sans tabac 2024 – Projet)"
        );
        assert_eq!(
            s("dossier_en_instruction"),
            "Votre dossier n° 42 va être examiné (Mois sans tabac 2024 – Projet)"
        );
        assert_eq!(
            s("dossier_accepte"),
            "Votre dossier n° 42 a été accepté (Mois sans tabac 2024 – Projet)"
        );
        assert_eq!(
            s("dossier_refuse"),
            "Votre dossier n° 42 a été refusé (Mois sans tabac 2024 – Projet)"
        );
        assert_eq!(
            s("dossier_sans_suite"),
            "Votre dossier n° 42 a été classé sans suite (Mois sans tabac 2024 – Projet)"
        );
        assert_eq!(
            s("dossier_reexamine"),
            "Votre dossier n° 42 est en train d'être réexaminé (Mois sans tabac 2024 – Projet)"
        );
        assert_eq!(
            s("dossier_a_corriger"),
            "Vous devez corriger votre dossier n° 42"
        );
        assert_eq!(
            s("nouveau_message"),
            "Nouveau message pour votre dossier n° 42 (Mois sans tabac 2024 – Projet)"
        );
        assert_eq!(s("invitation"), "Participez à l'élaboration d'un dossier");
        assert_eq!(
            s("avis_demande"),
            "Donnez votre avis sur le dossier n° 42 (Mois sans tabac 2024 – Projet)"
        );
    }

    #[test]
    fn user_content_is_escaped_in_html_and_kept_in_text() {
        let c = Catalogue::new();
        let r = c.render("dossier_accepte", ctx()).unwrap();
        assert!(
            r.html.contains("Projet &lt;b&gt;conforme&lt;&#x2f;b&gt;."),
            "{}",
            r.html
        );
        assert!(!r.html.contains("<b>conforme"));
        assert!(r.text.contains("Projet <b>conforme</b>."));
        assert!(r.text.contains("« decision.pdf »"));
        let r = c.render("invitation", ctx()).unwrap();
        assert!(!r.html.contains("<script>"));
        assert!(r.html.contains("&lt;script&gt;"));
    }

    #[test]
    fn optional_sections_disappear_without_their_value() {
        let c = Catalogue::new();
        let r = c
            .render(
                "dossier_accepte",
                context! { numero => 1, demarche => "D", date => "1/1/2026", motivation => "", justificatif => "" },
            )
            .unwrap();
        assert!(!r.text.contains("Motif"));
        assert!(!r.text.contains("justificatif"));
        assert!(!r.text.contains("\n\n\n"));
    }

    #[test]
    fn a_subject_with_line_breaks_stays_on_one_line() {
        let c = Catalogue::new();
        let r = c
            .render(
                "dossier_depose",
                context! { numero => 7, demarche => "Démarche\r\nBcc: evil@example.org", date => "x" },
            )
            .unwrap();
        assert_eq!(
            r.subject,
            "Votre dossier n° 7 a bien été déposé (Démarche Bcc: evil@example.org)"
        );
        assert_eq!(single_line("  a\t\u{7}b \n"), "a b");
    }
}
