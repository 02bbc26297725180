//! The pages people see: the login form and the error pages. Self-contained HTML (inline CSS,
//! no scripts, no external assets) that works without JavaScript and reads well on a phone.
//! Every interpolated value goes through `escape`.

/// The messages of SPEC §7, word for word.
pub mod messages {
    pub const INVALID_CREDENTIALS: &str = "Incorrect login or password";
    pub const CAPTCHA: &str = "Enter the characters shown in the picture";
    pub const TOO_MANY: &str = "Too many failed attempts. Try again later";
    pub const DISMISSED: &str = "User may have been dismissed. Contact your administrator";
    pub const IP_RESTRICTED: &str = "Access from your IP address is restricted";
    /// The global allowlist refused the address (not a SPEC §7 message; it never names a user).
    pub const IP_DENIED: &str = "Access from your IP address is not allowed";
    pub const EXPIRED: &str = "Your session has expired. Please sign in again";
    pub const SIGNED_OUT: &str = "You have signed out";
    pub const FORM_EXPIRED: &str = "The sign-in form has expired. Please try again";
}

pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

const STYLE: &str = r#"
*{box-sizing:border-box}
body{margin:0;min-height:100vh;display:flex;align-items:center;justify-content:center;
 background:#f2f4f7;color:#1d2330;font:16px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif}
main{width:100%;max-width:380px;margin:24px;background:#fff;border-radius:12px;
 box-shadow:0 1px 3px rgba(16,24,40,.1),0 8px 24px rgba(16,24,40,.06);padding:32px 28px}
h1{font-size:22px;margin:0 0 4px}
p.sub{margin:0 0 24px;color:#5b6475;font-size:14px}
label{display:block;font-weight:600;font-size:14px;margin:16px 0 6px}
input[type=text],input[type=password]{width:100%;padding:11px 12px;font-size:16px;
 border:1px solid #c8ced9;border-radius:8px;background:#fff;color:inherit}
img.captcha{display:block;width:100%;height:auto;margin:0 0 8px;border:1px solid #c8ced9;border-radius:8px}
input:focus{outline:2px solid #2f6fed;outline-offset:1px;border-color:#2f6fed}
.check{display:flex;align-items:center;gap:8px;margin:18px 0 4px;font-size:14px;font-weight:400}
.check input{width:18px;height:18px;margin:0}
button{width:100%;margin-top:22px;padding:12px;font-size:16px;font-weight:600;color:#fff;
 background:#2f6fed;border:0;border-radius:8px;cursor:pointer}
button:hover{background:#245bd0}
.alert{padding:10px 12px;border-radius:8px;font-size:14px;margin-bottom:8px}
.error{background:#fdecec;color:#a21c1c;border:1px solid #f5c2c2}
.notice{background:#eef4ff;color:#1f4aa8;border:1px solid #c9daff}
footer{margin-top:24px;text-align:center;color:#8a93a3;font-size:12px}
"#;

fn document(title: &str, body: &str) -> String {
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
<meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
<meta name=\"robots\" content=\"noindex\"><title>{}</title><style>{STYLE}</style></head>\
<body><main>{body}<footer>Protected by Portcullis</footer></main></body></html>\n",
        escape(title)
    )
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

pub fn login_page(view: &LoginView) -> String {
    let mut body =
        String::from("<h1>Sign in</h1><p class=\"sub\">Sign in to continue to the portal.</p>");
    if let Some(error) = view.error {
        body.push_str(&format!(
            "<div class=\"alert error\" role=\"alert\">{}</div>",
            escape(error)
        ));
    }
    if let Some(notice) = view.notice {
        body.push_str(&format!(
            "<div class=\"alert notice\" role=\"status\">{}</div>",
            escape(notice)
        ));
    }
    body.push_str(&format!(
        "<form method=\"post\" action=\"/_portcullis/login\">\
<input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\
<input type=\"hidden\" name=\"rd\" value=\"{rd}\">\
<label for=\"login\">Login or email</label>\
<input type=\"text\" id=\"login\" name=\"login\" value=\"{login}\" autocomplete=\"username\" autocapitalize=\"none\" spellcheck=\"false\" required autofocus>\
<label for=\"password\">Password</label>\
<input type=\"password\" id=\"password\" name=\"password\" autocomplete=\"current-password\" required>",
        csrf = escape(view.csrf),
        rd = escape(view.rd),
        login = escape(view.login),
    ));
    if let Some(id) = view.captcha {
        body.push_str(&format!(
            "<label for=\"captcha_answer\">{prompt}</label>\
<img class=\"captcha\" src=\"{src}\" width=\"{w}\" height=\"{h}\" alt=\"Characters to type in the field below\">\
<input type=\"hidden\" name=\"captcha_id\" value=\"{id}\">\
<input type=\"text\" id=\"captcha_answer\" name=\"captcha_answer\" autocomplete=\"off\" autocapitalize=\"characters\" spellcheck=\"false\" required>",
            prompt = escape(messages::CAPTCHA),
            src = escape(&crate::service::captcha::image_path(id)),
            id = escape(id),
            w = crate::service::captcha::WIDTH,
            h = crate::service::captcha::HEIGHT,
        ));
    }
    if view.remember_offered {
        body.push_str(&format!(
            "<label class=\"check\"><input type=\"checkbox\" name=\"remember\" value=\"1\"{}> Stay signed in</label>",
            if view.remember_checked { " checked" } else { "" }
        ));
    }
    body.push_str("<button type=\"submit\">Sign in</button></form>");
    document("Sign in", &body)
}

/// A page for a refusal or a failure: a title and one sentence of what to do.
pub fn message_page(title: &str, message: &str) -> String {
    document(
        title,
        &format!(
            "<h1>{}</h1><p class=\"sub\">{}</p><p><a href=\"/\">Go to the start page</a></p>",
            escape(title),
            escape(message)
        ),
    )
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
