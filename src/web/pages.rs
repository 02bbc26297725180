//! The pages people see: the login form and the error pages, from `templates/` (askama, checked
//! at compile time, every value escaped). Self-contained HTML (inline CSS, no scripts, no
//! external assets) that works without JavaScript and reads well on a phone.

use crate::service::captcha;

/// The messages of docs/reference.md (Messages), word for word.
pub mod messages {
    pub const INVALID_CREDENTIALS: &str = "Incorrect login or password";
    pub const CAPTCHA: &str = "Enter the characters shown in the picture";
    pub const TOO_MANY: &str = "Too many failed attempts. Try again later";
    pub const DISMISSED: &str = "User may have been dismissed. Contact your administrator";
    pub const IP_RESTRICTED: &str = "Access from your IP address is restricted";
    /// The global allowlist refused the address (it never names a user).
    pub const IP_DENIED: &str = "Access from your IP address is not allowed";
    pub const EXPIRED: &str = "Your session has expired. Please sign in again";
    pub const SIGNED_OUT: &str = "You have signed out";
    pub const FORM_EXPIRED: &str = "The sign-in form has expired. Please try again";
}

/// The entities every value in a page is written with (askama's escaper for `templates/*.html`,
/// named in `askama.toml`): `& < > " '`.
#[derive(Debug, Clone, Copy)]
pub struct Html;

impl askama::filters::Escaper for Html {
    fn write_escaped_str<W: std::fmt::Write>(&self, mut dest: W, text: &str) -> std::fmt::Result {
        let mut last = 0;
        for (i, c) in text.char_indices() {
            let entity = match c {
                '&' => "&amp;",
                '<' => "&lt;",
                '>' => "&gt;",
                '"' => "&quot;",
                '\'' => "&#39;",
                _ => continue,
            };
            dest.write_str(&text[last..i])?;
            dest.write_str(entity)?;
            last = i + 1;
        }
        dest.write_str(&text[last..])
    }
}

/// What the login form shows.
#[derive(Debug, Default)]
pub struct LoginView<'a> {
    pub error: Option<&'a str>,
    pub notice: Option<&'a str>,
    pub login: &'a str,
    pub rd: &'a str,
    pub csrf: &'a str,
    pub remember_offered: bool,
    pub remember_checked: bool,
    /// The challenge to answer, when a CAPTCHA is required.
    pub captcha: Option<&'a str>,
}

#[derive(askama::Template)]
#[template(path = "login.html")]
struct LoginPage<'a> {
    title: &'a str,
    view: &'a LoginView<'a>,
    captcha_prompt: &'a str,
    captcha_src: String,
    captcha_width: u32,
    captcha_height: u32,
}

#[derive(askama::Template)]
#[template(path = "message.html")]
struct MessagePage<'a> {
    title: &'a str,
    message: &'a str,
}

/// A template that cannot be written (it never fails for these: every value is text) gives
/// a plain sentence rather than half a page.
fn render(page: &impl askama::Template) -> String {
    page.render().unwrap_or_else(|e| {
        tracing::error!(error = %e, "a page could not be rendered");
        "The page could not be shown.".to_string()
    })
}

pub fn login_page(view: &LoginView) -> String {
    render(&LoginPage {
        title: "Sign in",
        view,
        captcha_prompt: messages::CAPTCHA,
        captcha_src: view.captcha.map(captcha::image_path).unwrap_or_default(),
        captcha_width: captcha::WIDTH,
        captcha_height: captcha::HEIGHT,
    })
}

/// A page for a refusal or a failure: a title and one sentence of what to do.
pub fn message_page(title: &str, message: &str) -> String {
    render(&MessagePage { title, message })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_escaped() {
        let html = login_page(&LoginView {
            login: "\"><script>alert(1)</script>",
            rd: "/a?b=\"c\"",
            csrf: "t",
            ..Default::default()
        });
        assert!(!html.contains("<script>"));
        assert!(html.contains("&quot;&gt;&lt;script&gt;"));
        assert!(html.contains("value=\"/a?b=&quot;c&quot;\""));
    }

    #[test]
    fn remember_checkbox_only_when_offered() {
        let with = login_page(&LoginView {
            remember_offered: true,
            ..Default::default()
        });
        let without = login_page(&LoginView::default());
        assert!(with.contains("Stay signed in"));
        assert!(!without.contains("Stay signed in"));
    }

    #[test]
    fn the_captcha_step_shows_the_picture_and_asks_for_the_answer() {
        let without = login_page(&LoginView::default());
        assert!(!without.contains("captcha_answer") && !without.contains("<img"));
        let with = login_page(&LoginView {
            captcha: Some("abcdefghijklmnopqrstu_"),
            ..Default::default()
        });
        assert!(with.contains("src=\"/_portcullis/captcha/abcdefghijklmnopqrstu_.png\""));
        assert!(with.contains("name=\"captcha_id\" value=\"abcdefghijklmnopqrstu_\""));
        assert!(with.contains("name=\"captcha_answer\""));
        assert!(with.contains(messages::CAPTCHA));
    }

    #[test]
    fn pages_load_nothing_from_elsewhere() {
        for html in [login_page(&LoginView::default()), message_page("t", "m")] {
            assert!(!html.contains("http://") && !html.contains("https://"));
            assert!(!html.contains("<script"));
        }
    }
}
