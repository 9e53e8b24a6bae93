//! Which display and channel names are acceptable, and when two names look alike.
//!
//! A name is shown to other people, so it must not be able to rearrange or hide what a
//! terminal draws around it: control characters, bidi controls (U+202A–U+202E,
//! U+2066–U+2069, U+200E/U+200F, U+061C) and zero-width or invisible characters are
//! refused (the server answers INVAL). Look-alikes of other names (`Ann` vs `Аnn` with a
//! Cyrillic А) cannot all be refused without a Unicode confusables table, so clients show
//! names that share a [`skeleton`] with a disambiguator instead.

/// True when `c` may appear in a name.
pub fn is_allowed_char(c: char) -> bool {
    !(c.is_control()
        || matches!(c,
            '\u{200B}'..='\u{200F}' // zero-width space/joiners, LRM, RLM
            | '\u{202A}'..='\u{202E}' // bidi embeddings and overrides
            | '\u{2060}'..='\u{206F}' // word joiner, invisible operators, bidi isolates, deprecated formats
            | '\u{061C}' // Arabic letter mark
            | '\u{00AD}' // soft hyphen
            | '\u{034F}' // combining grapheme joiner
            | '\u{115F}' | '\u{1160}' | '\u{3164}' | '\u{FFA0}' // Hangul fillers (blank)
            | '\u{180E}' // Mongolian vowel separator
            | '\u{FEFF}' // zero-width no-break space (BOM)
            | '\u{FE00}'..='\u{FE0F}' // variation selectors
            | '\u{FFF9}'..='\u{FFFB}' // interlinear annotations
            | '\u{E0000}'..='\u{E007F}' // tags
            | '\u{2028}' | '\u{2029}' // line and paragraph separators
        ))
}

/// True when every character of `name` is allowed (the length is checked elsewhere).
pub fn is_allowed_name(name: &str) -> bool {
    name.chars().all(is_allowed_char)
}

/// A name folded so that names that look alike fold the same: case, whitespace, and the
/// common Latin look-alikes from Cyrillic and Greek and digits (`0`/`o`, `1`/`l`/`I`).
/// Two different names with the same skeleton are *confusable*.
pub fn skeleton(name: &str) -> String {
    name.chars()
        .filter(|c| !c.is_whitespace())
        .flat_map(char::to_lowercase)
        .map(|c| match c {
            'а' | 'α' => 'a',
            'в' | 'β' => 'b',
            'с' | 'ϲ' => 'c',
            'е' | 'ε' => 'e',
            'н' | 'η' => 'h',
            'і' | 'ι' | '1' | 'l' | '|' | 'ӏ' => 'l',
            'ј' => 'j',
            'к' | 'κ' => 'k',
            'м' | 'μ' => 'm',
            'о' | 'ο' | '0' => 'o',
            'р' | 'ρ' => 'p',
            'ѕ' => 's',
            'т' | 'τ' => 't',
            'υ' => 'u',
            'х' | 'χ' => 'x',
            'у' | 'γ' => 'y',
            'ν' => 'v',
            other => other,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_invisible_and_reordering_characters() {
        for bad in [
            "a\u{202E}b",
            "a\u{2066}b",
            "a\u{2069}",
            "\u{200E}x",
            "x\u{200F}",
            "\u{061C}",
            "zero\u{200B}width",
            "j\u{200D}",
            "\u{FEFF}bom",
            "tab\t",
            "nl\n",
            "\u{7f}",
        ] {
            assert!(!is_allowed_name(bad), "{bad:?}");
        }
        for good in ["", "Zoë", "Ann Lee", "🎧 room", "日本語", "ﻣﺮﺣﺒﺎ"] {
            assert!(is_allowed_name(good), "{good:?}");
        }
    }

    #[test]
    fn look_alikes_share_a_skeleton() {
        assert_eq!(skeleton("Ann"), skeleton("Аnn")); // Cyrillic А
        assert_eq!(skeleton("bob"), skeleton("B0B"));
        assert_eq!(skeleton("al ice"), skeleton("Alice"));
        assert_eq!(skeleton("paul"), skeleton("pau1"));
        assert_ne!(skeleton("ann"), skeleton("anna"));
    }
}
