//! `captcha/{id}.png`: the picture of a live challenge.

use super::{Site, unavailable};
use crate::web::reply::Reply;

pub async fn image(site: &Site, id: &str) -> Reply {
    match site.captchas.captcha_image(id, site.clock.now()).await {
        Ok(Some(png)) => Reply::png(png),
        Ok(None) => Reply::page(
            404,
            "Picture expired",
            "This picture is no longer valid. Reload the sign-in page for a new one.",
        ),
        Err(e) => unavailable(e),
    }
}
