//! The TOTP enrolment URI as a QR code in the terminal (two rows per character).

/// Renders `data` as a QR code with Unicode half blocks; a plain note if it cannot.
pub fn render(data: &str) -> String {
    match qrcode::QrCode::new(data.as_bytes()) {
        Ok(code) => code
            .render::<qrcode::render::unicode::Dense1x2>()
            .dark_color(qrcode::render::unicode::Dense1x2::Light)
            .light_color(qrcode::render::unicode::Dense1x2::Dark)
            .build(),
        Err(_) => "(the URI is too long for a QR code; type it instead)".to_owned(),
    }
}
