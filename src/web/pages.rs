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
    pub const ENTER_CODE: &str = "Enter the code from your authenticator app";
    pub const INCORRECT_CODE: &str = "Incorrect code";
    pub const CODE_USED: &str = "This code has already been used. Wait for the next one";
    pub const SET_UP: &str = "Set up two-step verification to continue";
    pub const INCORRECT_PASSWORD: &str = "Incorrect password";
    pub const SENT_EMAIL: &str =
        "If this account exists, we have sent instructions to its e-mail address";
    pub const SENT_SMS: &str = "If this account exists, we have sent a code to its phone";
    pub const CODE_REFUSED: &str = "Incorrect or expired code";
    pub const PASSWORD_CHANGED: &str =
        "Your password has been changed. Your other devices were signed out";
    pub const SESSION_ENDED: &str = "The session has ended";
    pub const EMAIL_LINK_SENT: &str = "We have sent a confirmation link to the new address. Your e-mail address changes when you open it";
    pub const EMAIL_CHANGED: &str = "Your e-mail address has been changed";
    pub const PHONE_CODE_SENT: &str = "We have sent a code to the new number";
    pub const PHONE_CHANGED: &str = "Your phone number has been changed";
    pub const TWO_STEP_OFF: &str =
        "Two-step verification is off. Your other devices were signed out";
    pub const EMAIL_LINK_INVALID: &str =
        "This confirmation link is no longer valid. Ask for a new one on your account page";
    pub const REGISTERED: &str = "Your password is set. Sign in to continue";
    pub const INVITED: &str = "Finish your registration with the link in your invitation";
    pub const INVITATION_EXPIRED: &str =
        "This invitation has expired. Ask your administrator to send a new one";
    pub const INVITATION_INVALID: &str =
        "This invitation is no longer valid. Ask your administrator to send a new one";
    pub const INVALID_CHECKWORD: &str = "Invalid checkword. Request a new link";
    pub const PASSWORD_RESET: &str =
        "Your password has been changed. Sign in with your new password";
    pub const NO_EMAIL_RECOVERY: &str =
        "Recovery by e-mail is not available. Contact your administrator";

    pub fn wait(seconds: u64) -> String {
        format!("You can send another request after {seconds} seconds")
    }
}

pub use crate::core::html::Html;

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
    /// "Forgot your password?": mail or SMS is configured.
    pub forgot_offered: bool,
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

/// What the second step shows.
#[derive(Debug, Default)]
pub struct TwoFactorView<'a> {
    pub error: Option<&'a str>,
    pub csrf: &'a str,
    pub rd: &'a str,
    /// The backup code field instead of the app's code.
    pub backup: bool,
}

#[derive(askama::Template)]
#[template(path = "two_factor.html")]
struct TwoFactorPage<'a> {
    title: &'a str,
    prompt: &'a str,
    error: Option<&'a str>,
    csrf: &'a str,
    rd: &'a str,
    rd_query: String,
    backup: bool,
}

pub fn two_factor_page(view: &TwoFactorView) -> String {
    render(&TwoFactorPage {
        title: "Two-step verification",
        prompt: if view.backup {
            "Enter one of the backup codes you saved"
        } else {
            messages::ENTER_CODE
        },
        error: view.error,
        csrf: view.csrf,
        rd: view.rd,
        rd_query: form_urlencoded::byte_serialize(view.rd.as_bytes()).collect(),
        backup: view.backup,
    })
}

/// What the enrolment page shows. No `Debug`: it holds the secret.
pub struct SetupView<'a> {
    pub notice: &'a str,
    pub error: Option<&'a str>,
    pub csrf: &'a str,
    pub rd: &'a str,
    pub uri: &'a str,
    pub grouped: &'a str,
    pub sealed: &'a str,
    /// Digits of a code, as configured.
    pub digits: u32,
    /// Replacing a factor that is on: the password again first.
    pub ask_password: bool,
}

#[derive(askama::Template)]
#[template(path = "setup.html")]
struct SetupPage<'a> {
    title: &'a str,
    notice: &'a str,
    error: Option<&'a str>,
    csrf: &'a str,
    rd: &'a str,
    uri: &'a str,
    grouped: &'a str,
    sealed: &'a str,
    digits: u32,
    ask_password: bool,
    qr_svg: String,
}

/// The QR code of `text`, drawn here as inline SVG (no external service, no script).
pub fn qr_svg(text: &str) -> String {
    match qrcode::QrCode::new(text.as_bytes()) {
        Ok(code) => {
            let svg = code
                .render::<qrcode::render::svg::Color>()
                .min_dimensions(220, 220)
                .quiet_zone(true)
                .build();
            // Inline in HTML, an XML declaration before the drawing is noise.
            svg.find("<svg")
                .map_or(svg.clone(), |at| svg[at..].to_string())
        }
        Err(e) => {
            tracing::error!(error = %e, "could not draw a QR code");
            String::new()
        }
    }
}

pub fn setup_page(view: &SetupView) -> String {
    render(&SetupPage {
        title: "Set up two-step verification",
        notice: view.notice,
        error: view.error,
        csrf: view.csrf,
        rd: view.rd,
        uri: view.uri,
        grouped: view.grouped,
        sealed: view.sealed,
        digits: view.digits,
        ask_password: view.ask_password,
        qr_svg: qr_svg(view.uri),
    })
}

#[derive(askama::Template)]
#[template(path = "backup_codes.html")]
struct BackupCodesPage<'a> {
    title: &'a str,
    codes: Vec<String>,
    next: &'a str,
}

/// The backup codes, shown once, and where to go on.
pub fn backup_codes_page(codes: Vec<String>, next: &str) -> String {
    render(&BackupCodesPage {
        title: "Save your backup codes",
        codes,
        next,
    })
}

#[derive(askama::Template)]
#[template(path = "two_factor_status.html")]
struct StatusPage<'a> {
    title: &'a str,
    error: Option<&'a str>,
    left: u64,
    csrf: &'a str,
    rd: &'a str,
}

/// For someone signed in with two-step verification on: how many backup codes are left, a
/// new set (after the password again), and the way to a new phone.
pub fn two_factor_status_page(left: u64, error: Option<&str>, csrf: &str, rd: &str) -> String {
    render(&StatusPage {
        title: "Two-step verification",
        error,
        left,
        csrf,
        rd,
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
    fn the_setup_page_draws_the_qr_code_inline_and_shows_the_key_and_link() {
        let uri = "otpauth://totp/Portcullis:a%40b?secret=JBSWY3DPEHPK3PXP&issuer=Portcullis";
        let html = setup_page(&SetupView {
            notice: messages::SET_UP,
            error: None,
            csrf: "t",
            rd: "/",
            uri,
            grouped: "JBSW Y3DP EHPK 3PXP",
            sealed: "s",
            digits: 8,
            ask_password: false,
        });
        let svg = html.find("<svg").expect("an inline SVG");
        assert!(!html.contains("<?xml") && html[svg..].contains("</svg>"));
        assert!(!html.contains("<script") && !html.contains("<img"));
        assert!(html.contains("<code id=\"secret\">JBSW Y3DP EHPK 3PXP</code>"));
        assert!(
            html.contains("otpauth://totp/Portcullis:a%40b?secret=JBSWY3DPEHPK3PXP&amp;issuer")
        );
        assert!(html.contains("Enter the 8-digit code"));
        assert!(
            html.contains("autocomplete=\"one-time-code\"")
                && html.contains("inputmode=\"numeric\"")
        );
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

/// What the "Forgot your password?" page shows: the form, or (`notice`) the answer.
#[derive(Debug, Default)]
pub struct ForgotView<'a> {
    pub error: Option<&'a str>,
    pub notice: Option<&'a str>,
    pub csrf: &'a str,
    pub login: &'a str,
    /// A phone number may be typed (SMS is configured).
    pub sms: bool,
}

#[derive(askama::Template)]
#[template(path = "forgot.html")]
struct ForgotPage<'a> {
    title: &'a str,
    error: Option<&'a str>,
    notice: Option<&'a str>,
    csrf: &'a str,
    login: &'a str,
    prompt: &'a str,
    label: &'a str,
}

pub fn forgot_page(view: &ForgotView) -> String {
    let (prompt, label) = if view.sms {
        (
            "Type your login or e-mail to get a link by e-mail, or your phone number to get a code by SMS.",
            "Login, e-mail or phone",
        )
    } else {
        (
            "Type your login or e-mail and we will send you a link to choose a new password.",
            "Login or e-mail",
        )
    };
    render(&ForgotPage {
        title: "Forgot your password?",
        error: view.error,
        notice: view.notice,
        csrf: view.csrf,
        login: view.login,
        prompt,
        label,
    })
}

/// The SMS code's form.
#[derive(askama::Template)]
#[template(path = "sms_code.html")]
pub struct CodePage<'a> {
    pub title: &'a str,
    pub error: Option<&'a str>,
    pub notice: Option<&'a str>,
    pub csrf: &'a str,
    pub phone: &'a str,
    /// "60 seconds".
    pub lifetime: &'a str,
}

pub fn code_page(page: &CodePage) -> String {
    render(page)
}

/// The new password's form. No `Debug`: it holds the link's token.
#[derive(askama::Template)]
#[template(path = "reset.html")]
pub struct ResetPage<'a> {
    pub title: &'a str,
    pub error: Option<&'a str>,
    pub csrf: &'a str,
    pub token: &'a str,
    /// `email` or `sms`: how the person got here, for the metrics.
    pub via: &'a str,
    pub login: &'a str,
    pub min_length: usize,
}

pub fn reset_page(page: &ResetPage) -> String {
    render(page)
}

/// One line of the account page's recent sign-ins.
pub struct ActivityRow {
    pub what: &'static str,
    pub when: String,
    pub ip: String,
    pub device: String,
}

/// One session as the account page shows it.
pub struct SessionRow {
    pub handle: String,
    pub device: String,
    pub ip: String,
    pub signed_in: String,
    pub last_active: String,
    pub this_device: bool,
}

/// What the account page shows. No `Debug`: it holds the CSRF token.
pub struct AccountView<'a> {
    pub notice: Option<&'a str>,
    pub error: Option<&'a str>,
    pub csrf: &'a str,
    pub user: &'a crate::core::identity::User,
    /// Backup codes left when two-step verification is on.
    pub codes_left: Option<u64>,
    pub sessions: Vec<SessionRow>,
    pub activity: Vec<ActivityRow>,
    pub min_length: usize,
    /// The e-mail change form is offered (mail is configured).
    pub mail: bool,
    /// The phone change form is offered (SMS is configured).
    pub sms: bool,
    /// Two-step verification cannot be turned off (`two_factor.required_groups`).
    pub two_step_required: bool,
    /// An administrator turned it off until then (shown as a time).
    pub turned_off_until: Option<String>,
    /// A new phone number waiting for its code: the signed change the code form carries.
    pub phone_change: Option<&'a str>,
}

#[derive(askama::Template)]
#[template(path = "account.html")]
struct AccountPage<'a> {
    title: &'a str,
    notice: Option<&'a str>,
    error: Option<&'a str>,
    csrf: &'a str,
    user: &'a crate::core::identity::User,
    groups: String,
    codes_left: Option<u64>,
    sessions: &'a [SessionRow],
    activity: &'a [ActivityRow],
    min_length: usize,
    mail: bool,
    login_is_email: bool,
    sms: bool,
    phone_change: Option<&'a str>,
    two_step_required: bool,
    turned_off_until: Option<&'a str>,
}

pub fn account_page(view: &AccountView) -> String {
    render(&AccountPage {
        title: "Your account",
        notice: view.notice,
        error: view.error,
        csrf: view.csrf,
        user: view.user,
        groups: view.user.groups.join(", "),
        codes_left: view.codes_left,
        sessions: &view.sessions,
        activity: &view.activity,
        min_length: view.min_length,
        mail: view.mail,
        sms: view.sms,
        phone_change: view.phone_change,
        two_step_required: view.two_step_required,
        turned_off_until: view.turned_off_until.as_deref(),
        login_is_email: view.user.login.eq_ignore_ascii_case(&view.user.email),
    })
}

/// The page a confirmation link opens: a button, so that a mail scanner following links
/// changes nothing.
#[derive(askama::Template)]
#[template(path = "email_confirm.html")]
pub struct EmailConfirmPage<'a> {
    pub title: &'a str,
    pub csrf: &'a str,
    pub token: &'a str,
    pub new_email: &'a str,
}

pub fn email_confirm_page(page: &EmailConfirmPage) -> String {
    render(page)
}

/// The invitation's form. No `Debug`: it holds the link's token.
#[derive(askama::Template)]
#[template(path = "invite.html")]
pub struct InvitePage<'a> {
    pub title: &'a str,
    pub error: Option<&'a str>,
    pub csrf: &'a str,
    pub token: &'a str,
    pub login: &'a str,
    pub min_length: usize,
}

pub fn invite_page(page: &InvitePage) -> String {
    render(page)
}

/// A time as the pages show it: `2026-12-02 14:21 UTC`.
pub fn shown_time(t: crate::core::time::UnixTime) -> String {
    let s = crate::core::time::rfc3339(t);
    match (s.get(..10), s.get(11..16)) {
        (Some(day), Some(minute)) if s.as_bytes().get(10) == Some(&b'T') => {
            format!("{day} {minute} UTC")
        }
        _ => s,
    }
}
