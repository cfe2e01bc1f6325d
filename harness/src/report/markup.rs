//! Text into markup: escaping for HTML and SVG, and an SVG document made
//! fit to sit inside an HTML page.

/// Escapes text for HTML (element content and quoted attributes) and SVG.
pub(super) fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The height an inferno SVG declares on its root element, in pixels.
pub(super) fn svg_height(svg: &str) -> Option<u32> {
    let root = &svg[svg.find("<svg")?..];
    let root = &root[..root.find('>')?];
    let at = root.find(" height=\"")? + " height=\"".len();
    root[at..].split('"').next()?.parse().ok()
}

/// The SVG without its XML declaration and doctype, to put inside HTML.
pub(super) fn svg_body(svg: &str) -> &str {
    svg.find("<svg").map_or(svg, |at| &svg[at..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_escaped() {
        assert_eq!(escape("<a href=\"x\">&'</a>"), "&lt;a href=&quot;x&quot;&gt;&amp;&#39;&lt;/a&gt;");
    }

    #[test]
    fn the_declared_height_is_read() {
        let inferno = "<?xml?><svg version=\"1.1\" width=\"100%\" height=\"406\" onload=\"init(evt)\">";
        assert_eq!(svg_height(inferno), Some(406));
        assert_eq!(svg_height("<svg width=\"1\">"), None);
        assert_eq!(svg_body("<?xml version=\"1.0\"?><!DOCTYPE svg><svg/>"), "<svg/>");
    }
}
