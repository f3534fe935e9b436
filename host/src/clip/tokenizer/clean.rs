//! The text clean-up CLIP's reference tokenizer applies before splitting text into words.
//!
//! open_clip's `SimpleTokenizer` (a copy of OpenAI's) runs
//! `whitespace_clean(basic_clean(text)).lower()`, where `basic_clean` is
//! `ftfy.fix_text(text)` followed by `html.unescape` twice. This module reproduces that chain:
//!
//! 1. [`fix_text`]: the parts of ftfy 6's `fix_text` that are fixed rules — HTML entity decoding
//!    (only in lines without `<`, as ftfy's `unescape_html="auto"` does), C1 control characters
//!    read as Windows-1252, Latin ligatures, full- and half-width forms, curly quotes, line breaks,
//!    terminal escape sequences, unwanted control characters and NFC — repeated until the text
//!    stops changing, as ftfy does.
//! 2. [`html_unescape`] twice: Python's `html.unescape`, rule for rule.
//! 3. [`collapse_whitespace`]: Python's `" ".join(text.split())`.
//! 4. Lower-casing with the full Unicode mapping, as Python's `str.lower` does.
//!
//! What is not reproduced: ftfy's mojibake repair (`fix_encoding`), a heuristic that re-decodes
//! text that looks like UTF-8 read as Latin-1 or Windows-1252 (`"cafÃ©"` → `"café"`). Text that is
//! not mojibake is unaffected by it; mojibake is tokenized as written here where the reference
//! would first repair it. The reference script `tests/scripts/tokenizer_reference.py` checks that
//! every string in the test fixture lies outside that heuristic's reach.

use std::collections::HashMap;
use std::sync::LazyLock;

use regex::{Captures, Regex};
use unicode_normalization::UnicodeNormalization;

/// ftfy fixes text in segments of at most this many characters (one line at a time, and long
/// lines in pieces of this length).
const FTFY_MAX_SEGMENT_CHARS: usize = 1_000_000;

/// Runs the reference tokenizer's full clean-up: ftfy-style fixes, `html.unescape` twice,
/// whitespace collapse and lower-casing.
pub(crate) fn clean(text: &str) -> String {
    clean_keeping_case(text).to_lowercase()
}

/// The clean-up without the lower-casing: open_clip's `_clean_whitespace`
/// (`whitespace_clean(basic_clean(text))`), which its `HFTokenizer` applies before a Hugging Face
/// tokenizer (BiomedCLIP's WordPiece tokenizer, [`crate::clip::wordpiece`]).
pub(crate) fn clean_keeping_case(text: &str) -> String {
    let fixed = fix_text(text);
    let unescaped = html_unescape(&html_unescape(&fixed));
    collapse_whitespace(&unescaped)
}

/// Python's `" ".join(text.split())`: runs of Python whitespace become one space and the ends
/// are trimmed.
fn collapse_whitespace(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for word in text.split(is_python_whitespace).filter(|w| !w.is_empty()) {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(word);
    }
    out
}

/// Python's `str.isspace`: the Unicode `White_Space` characters plus the four ASCII information
/// separators U+001C..U+001F, which Python counts as whitespace and Unicode does not.
fn is_python_whitespace(c: char) -> bool {
    c.is_whitespace() || ('\u{1C}'..='\u{1F}').contains(&c)
}

/// The reproducible part of ftfy 6's `fix_text` with its default settings (see the module docs).
fn fix_text(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    // ftfy's "auto" HTML unescaping is switched off for the rest of the text at the first
    // segment that contains '<', since the text is then probably HTML with literal entities.
    let mut unescape_entities = true;
    for line in text.split_inclusive('\n') {
        for segment in char_chunks(line, FTFY_MAX_SEGMENT_CHARS) {
            if segment.contains('<') {
                unescape_entities = false;
            }
            out.push_str(&fix_segment(segment, unescape_entities));
        }
    }
    out
}

/// Splits `text` into pieces of at most `max_chars` characters.
fn char_chunks(text: &str, max_chars: usize) -> impl Iterator<Item = &str> {
    let mut rest = text;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let end = rest
            .char_indices()
            .nth(max_chars)
            .map_or(rest.len(), |(offset, _)| offset);
        let (chunk, tail) = rest.split_at(end);
        rest = tail;
        Some(chunk)
    })
}

/// ftfy's `fix_and_explain` without the encoding repair: the fixers in ftfy's order, repeated
/// until a pass changes nothing.
fn fix_segment(segment: &str, unescape_entities: bool) -> String {
    let mut text = segment.to_owned();
    loop {
        let before = text.clone();
        if unescape_entities {
            text = ftfy_unescape_html(&text);
        }
        text = fix_c1_controls(&text);
        text = fix_latin_ligatures(&text);
        text = fix_character_width(&text);
        text = uncurl_quotes(&text);
        text = fix_line_breaks(&text);
        text = remove_terminal_escapes(&text);
        text = remove_control_chars(&text);
        text = text.nfc().collect();
        if text == before {
            return text;
        }
    }
}

/// ftfy's `unescape_html`: decodes `&name;` entities that end with a semicolon (and upper-case
/// forms of lower-case entities such as `&EACUTE;`) and numeric references that consume their
/// semicolon; anything else is left as written.
fn ftfy_unescape_html(text: &str) -> String {
    static ENTITY: LazyLock<Regex> =
        LazyLock::new(|| Regex::new(r"&#?[0-9A-Za-z]{1,24};").expect("valid entity pattern"));
    if !text.contains('&') {
        return text.to_owned();
    }
    ENTITY
        .replace_all(text, |caps: &Captures| {
            let entity = &caps[0];
            if let Some(expansion) = ftfy_entities().get(entity) {
                expansion.clone()
            } else if entity.starts_with("&#") {
                let decoded = html_unescape(entity);
                // A numeric reference that did not consume its semicolon stays as written.
                if decoded.contains(';') {
                    entity.to_owned()
                } else {
                    decoded
                }
            } else {
                entity.to_owned()
            }
        })
        .into_owned()
}

/// ftfy's `HTML_ENTITIES`: every HTML5 entity that ends with a semicolon, plus the upper-cased
/// form of each lower-case one whose upper-cased form is not itself decodable by
/// `html.unescape`, expanding to the upper-cased expansion (`&EACUTE;` → `É`).
fn ftfy_entities() -> &'static HashMap<String, String> {
    static TABLE: LazyLock<HashMap<String, String>> = LazyLock::new(|| {
        let mut table = HashMap::new();
        for (name, expansion) in html5_entities().filter(|(name, _)| name.ends_with(';')) {
            table.insert(format!("&{name}"), expansion.to_owned());
            if name.chars().any(char::is_uppercase) {
                continue;
            }
            let upper = format!("&{}", name.to_uppercase());
            if html_unescape(&upper) == upper {
                table.insert(upper, expansion.to_uppercase());
            }
        }
        table
    });
    &TABLE
}

/// The HTML5 named character references as Python's `html.entities.html5` holds them: the name
/// without its `&` (with its `;` where it has one) and its expansion.
fn html5_entities() -> impl Iterator<Item = (&'static str, &'static str)> {
    htmlize::ENTITIES.entries().filter_map(|(name, expansion)| {
        let name = std::str::from_utf8(name).ok()?.strip_prefix('&')?;
        Some((name, std::str::from_utf8(expansion).ok()?))
    })
}

/// Looks a reference name up in the HTML5 table, as Python's `name in html5` does.
fn html5_entity(name: &str) -> Option<&'static str> {
    let key = format!("&{name}");
    let expansion = htmlize::ENTITIES.get(key.as_bytes())?;
    std::str::from_utf8(expansion).ok()
}

/// Python's `html.unescape`, rule for rule: numeric references (with the HTML5 replacements for
/// invalid code points), named references with or without their semicolon, and, for names not
/// in the table, the longest legacy entity that prefixes the name (`&ampfoo` → `&foo`).
pub(crate) fn html_unescape(text: &str) -> String {
    static CHARREF: LazyLock<Regex> = LazyLock::new(|| {
        Regex::new(r"&(#[0-9]+;?|#[xX][0-9a-fA-F]+;?|[^\t\n\x0C <&#;]{1,32};?)")
            .expect("valid character reference pattern")
    });
    if !text.contains('&') {
        return text.to_owned();
    }
    CHARREF
        .replace_all(text, |caps: &Captures| replace_charref(&caps[1]))
        .into_owned()
}

/// Expands one reference; `reference` is what follows the `&`.
fn replace_charref(reference: &str) -> String {
    if let Some(number) = reference.strip_prefix('#') {
        let number = number.trim_end_matches(';');
        let parsed = match number.strip_prefix(['x', 'X']) {
            Some(hex) => u32::from_str_radix(hex, 16),
            None => number.parse::<u32>(),
        };
        // The pattern admits only digits, so parsing fails only on overflow: out of range.
        return numeric_reference(parsed.unwrap_or(u32::MAX));
    }
    if let Some(expansion) = html5_entity(reference) {
        return expansion.to_owned();
    }
    // The longest prefix of at least two characters that is an entity, shortest last.
    let prefix_ends: Vec<usize> = reference.char_indices().map(|(i, _)| i).skip(2).collect();
    for &end in prefix_ends.iter().rev() {
        if let Some(expansion) = html5_entity(&reference[..end]) {
            return format!("{expansion}{}", &reference[end..]);
        }
    }
    format!("&{reference}")
}

/// The character a numeric reference stands for, with the replacements `html.unescape` makes.
fn numeric_reference(code: u32) -> String {
    match code {
        0x00 => "\u{FFFD}".to_owned(),
        0x0D => "\r".to_owned(),
        0x80..=0x9F => windows_1252_c1(code).to_string(),
        0xD800..=0xDFFF => "\u{FFFD}".to_owned(),
        _ if code > 0x10FFFF => "\u{FFFD}".to_owned(),
        _ if is_invalid_codepoint(code) => String::new(),
        _ => char::from_u32(code).map_or_else(|| "\u{FFFD}".to_owned(), String::from),
    }
}

/// The code points `html.unescape` drops from numeric references: C0 and C1 controls other than
/// whitespace, U+007F, and the Unicode noncharacters.
fn is_invalid_codepoint(code: u32) -> bool {
    matches!(code, 0x01..=0x08 | 0x0B | 0x0E..=0x1F | 0x7F..=0x9F | 0xFDD0..=0xFDEF)
        || code & 0xFFFE == 0xFFFE
}

/// Windows-1252's characters for bytes 0x80..=0x9F; the five bytes it leaves undefined keep
/// their C1 code point (the "sloppy" reading browsers, `html.unescape` and ftfy all use).
fn windows_1252_c1(code: u32) -> char {
    const TABLE: [char; 32] = [
        '€', '\u{81}', '‚', 'ƒ', '„', '…', '†', '‡', 'ˆ', '‰', 'Š', '‹', 'Œ', '\u{8D}', 'Ž',
        '\u{8F}', '\u{90}', '‘', '’', '“', '”', '•', '–', '—', '˜', '™', 'š', '›', 'œ', '\u{9D}',
        'ž', 'Ÿ',
    ];
    TABLE[(code - 0x80) as usize]
}

/// ftfy's `fix_c1_controls`: C1 control characters are read as Windows-1252.
fn fix_c1_controls(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            '\u{80}'..='\u{9F}' => windows_1252_c1(c as u32),
            _ => c,
        })
        .collect()
}

/// ftfy's `fix_latin_ligatures`: single-character Latin ligatures become their letters.
fn fix_latin_ligatures(text: &str) -> String {
    const LIGATURES: [(char, &str); 22] = [
        ('Ĳ', "IJ"),
        ('ĳ', "ij"),
        ('ŉ', "ʼn"),
        ('Ǳ', "DZ"),
        ('ǲ', "Dz"),
        ('ǳ', "dz"),
        ('Ǆ', "DŽ"),
        ('ǅ', "Dž"),
        ('ǆ', "dž"),
        ('Ǉ', "LJ"),
        ('ǈ', "Lj"),
        ('ǉ', "lj"),
        ('Ǌ', "NJ"),
        ('ǋ', "Nj"),
        ('ǌ', "nj"),
        ('ﬀ', "ff"),
        ('ﬁ', "fi"),
        ('ﬂ', "fl"),
        ('ﬃ', "ffi"),
        ('ﬄ', "ffl"),
        ('ﬅ', "ſt"),
        ('ﬆ', "st"),
    ];
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match LIGATURES.iter().find(|(ligature, _)| *ligature == c) {
            Some((_, letters)) => out.push_str(letters),
            None => out.push(c),
        }
    }
    out
}

/// ftfy's `fix_character_width`: the half- and full-width forms block (U+FF01..U+FFEF) is
/// replaced by its NFKC equivalents, and the ideographic space by a plain space.
fn fix_character_width(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\u{3000}' => out.push(' '),
            '\u{FF01}'..='\u{FFEF}' => out.extend(std::iter::once(c).nfkc()),
            _ => out.push(c),
        }
    }
    out
}

/// ftfy's `uncurl_quotes`: curly single and double quotation marks become straight ones.
fn uncurl_quotes(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            '\u{2BC}' | '\u{2018}'..='\u{201B}' => '\'',
            '\u{201C}'..='\u{201F}' => '"',
            _ => c,
        })
        .collect()
}

/// ftfy's `fix_line_breaks`: CRLF, CR, LINE SEPARATOR, PARAGRAPH SEPARATOR and NEXT LINE
/// become `\n`.
fn fix_line_breaks(text: &str) -> String {
    text.replace("\r\n", "\n")
        .replace(['\r', '\u{2028}', '\u{2029}', '\u{85}'], "\n")
}

/// ftfy's `remove_terminal_escapes`: ANSI escape sequences such as `ESC[31m` are removed.
fn remove_terminal_escapes(text: &str) -> String {
    static ANSI: LazyLock<Regex> =
        LazyLock::new(|| Regex::new(r"\x1B\[(?:\d|;)*[a-zA-Z]").expect("valid ANSI pattern"));
    ANSI.replace_all(text, "").into_owned()
}

/// ftfy's `remove_control_chars`: control characters that are almost never meant — C0 controls
/// other than tab, line feed, form feed and carriage return, DEL, the deprecated Arabic format
/// characters, the byte-order mark and the interlinear annotation / object replacement
/// characters — are removed.
fn remove_control_chars(text: &str) -> String {
    text.chars()
        .filter(|c| {
            !matches!(
                c,
                '\u{00}'..='\u{08}'
                    | '\u{0B}'
                    | '\u{0E}'..='\u{1F}'
                    | '\u{7F}'
                    | '\u{206A}'..='\u{206F}'
                    | '\u{FEFF}'
                    | '\u{FFF9}'..='\u{FFFC}'
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_whitespace_includes_the_information_separators() {
        assert_eq!(collapse_whitespace("\u{1C}a\u{1F}\u{3000}b\u{85} "), "a b");
        // U+200B ZERO WIDTH SPACE is not whitespace for Python.
        assert_eq!(collapse_whitespace("a\u{200B}b"), "a\u{200B}b");
    }

    #[test]
    fn html_unescape_follows_python() {
        // Hand-checked against Python 3.11's html.unescape.
        assert_eq!(
            html_unescape("&amp;amp; &lt &ampfoo &#65;&#x42 &#0; &#x80;"),
            "&amp; < &foo AB \u{FFFD} €"
        );
        assert_eq!(
            html_unescape("&#xD800; &#1114112; &#1; &#xFFFF; &#99999999999;"),
            "\u{FFFD} \u{FFFD}   \u{FFFD}"
        );
        assert_eq!(
            html_unescape("&nosuchentity; AT&T &#;"),
            "&nosuchentity; AT&T &#;"
        );
    }

    #[test]
    fn ftfy_unescape_needs_a_semicolon_and_knows_upper_case_forms() {
        assert_eq!(
            ftfy_unescape_html("&eacute; &EACUTE; &eacute &NTILDE; &nTILDE;"),
            "é É &eacute Ñ &nTILDE;"
        );
        // A numeric reference that stops before its semicolon is left alone.
        assert_eq!(ftfy_unescape_html("&#65; &#65x;"), "A &#65x;");
    }

    #[test]
    fn fix_text_stops_unescaping_after_a_line_with_angle_brackets() {
        assert_eq!(fix_text("&amp;\n<b> &amp;\n&amp;"), "&\n<b> &amp;\n&amp;");
    }

    #[test]
    fn fixers_compose_like_ftfy() {
        // C1 0x93/0x94 are Windows-1252 curly quotes, which are then uncurled.
        assert_eq!(
            fix_text("\u{93}hi\u{94} ﬁsh ＡＢ\u{3000}\x1B[31mred\x1B[0m\u{0}"),
            "\"hi\" fish AB red"
        );
        // Half-width katakana with a voicing mark composes under NFC after the width fix.
        assert_eq!(fix_text("ｳﾞ"), "ヴ");
    }

    #[test]
    fn clean_lowercases_after_collapsing() {
        assert_eq!(clean("  Tom &amp;amp; JERRY\t\n"), "tom & jerry");
        assert_eq!(clean("ΣΑΣ"), "σας");
    }
}
