//! `captcha/{id}.png`: the picture of a live challenge.

use super::{Handled, Site};
use crate::web::reply::Reply;

pub async fn image(site: &Site, id: &str) -> Handled {
    Ok(
        match site.captchas.captcha_image(id, site.clock.now()).await? {
            Some(png) => Reply::png(png),
            None => Reply::page(
                404,
                "Picture expired",
                "This picture is no longer valid. Reload the sign-in page for a new one.",
            ),
        },
    )
}
