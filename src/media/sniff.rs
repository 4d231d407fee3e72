//! What a file is, decided from its bytes alone: the client's file name and
//! claimed type are never consulted. Only the kinds below are ever stored;
//! anything else (SVG, HTML, XML, executables, archives) is refused, because
//! a file served from our origin must not be able to run script there.
//!
//! Binary kinds are recognised from the first [`SNIFF_LEN`] bytes. Plain text
//! has no magic number, so it is checked over the whole file as it streams
//! in, by [`TextCheck`].

/// Bytes [`sniff`] wants to see before deciding (fewer only at the end of a
/// short file).
pub const SNIFF_LEN: usize = 256;

/// A kind of file roomcast stores and serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// PNG image.
    Png,
    /// JPEG image.
    Jpeg,
    /// GIF image.
    Gif,
    /// WebP image.
    Webp,
    /// MP4 (ISO base media) video.
    Mp4,
    /// WebM video.
    Webm,
    /// MP3 audio.
    Mp3,
    /// Ogg audio.
    Ogg,
    /// WAV audio.
    Wav,
    /// PDF document.
    Pdf,
    /// Plain UTF-8 text.
    Text,
}

impl Kind {
    /// Every kind.
    pub const ALL: [Kind; 11] = [
        Kind::Png,
        Kind::Jpeg,
        Kind::Gif,
        Kind::Webp,
        Kind::Mp4,
        Kind::Webm,
        Kind::Mp3,
        Kind::Ogg,
        Kind::Wav,
        Kind::Pdf,
        Kind::Text,
    ];

    /// The extension of a stored file of this kind.
    pub fn ext(self) -> &'static str {
        match self {
            Kind::Png => "png",
            Kind::Jpeg => "jpg",
            Kind::Gif => "gif",
            Kind::Webp => "webp",
            Kind::Mp4 => "mp4",
            Kind::Webm => "webm",
            Kind::Mp3 => "mp3",
            Kind::Ogg => "ogg",
            Kind::Wav => "wav",
            Kind::Pdf => "pdf",
            Kind::Text => "txt",
        }
    }

    /// The kind whose stored files end in `.ext`.
    pub fn from_ext(ext: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.ext() == ext)
    }

    /// The media type, as reported in attachments and upload answers.
    pub fn content_type(self) -> &'static str {
        match self {
            Kind::Png => "image/png",
            Kind::Jpeg => "image/jpeg",
            Kind::Gif => "image/gif",
            Kind::Webp => "image/webp",
            Kind::Mp4 => "video/mp4",
            Kind::Webm => "video/webm",
            Kind::Mp3 => "audio/mpeg",
            Kind::Ogg => "audio/ogg",
            Kind::Wav => "audio/wav",
            Kind::Pdf => "application/pdf",
            Kind::Text => "text/plain",
        }
    }

    /// The `Content-Type` header files of this kind are served with (text
    /// says its charset, so a browser never guesses one).
    pub fn header_value(self) -> &'static str {
        match self {
            Kind::Text => "text/plain; charset=utf-8",
            other => other.content_type(),
        }
    }

    /// Whether a browser may show it inline: images, audio and video are
    /// rendered as media, never as a document. Everything else is a download.
    pub fn is_media(self) -> bool {
        !matches!(self, Kind::Pdf | Kind::Text)
    }
}

/// ISO base media brands that are still images, not video (HEIF, AVIF).
const IMAGE_BRANDS: [&[u8; 4]; 8] = [
    b"avif", b"avis", b"heic", b"heix", b"hevc", b"hevx", b"mif1", b"msf1",
];

/// The kind of a file that starts with `head` (at least [`SNIFF_LEN`] bytes,
/// or the whole file if shorter). `Some(Kind::Text)` means only that the start
/// looks like text: the rest must pass a [`TextCheck`] too.
pub fn sniff(head: &[u8]) -> Option<Kind> {
    let at = |i: usize, magic: &[u8]| head.get(i..i + magic.len()) == Some(magic);
    if at(0, b"\x89PNG\r\n\x1a\n") {
        return Some(Kind::Png);
    }
    if at(0, b"\xff\xd8\xff") {
        return Some(Kind::Jpeg);
    }
    if at(0, b"GIF87a") || at(0, b"GIF89a") {
        return Some(Kind::Gif);
    }
    if at(0, b"RIFF") && at(8, b"WEBP") {
        return Some(Kind::Webp);
    }
    if at(0, b"RIFF") && at(8, b"WAVE") {
        return Some(Kind::Wav);
    }
    if at(4, b"ftyp") {
        let brand = head.get(8..12)?;
        return (!IMAGE_BRANDS.iter().any(|b| b[..] == *brand)).then_some(Kind::Mp4);
    }
    if at(0, b"\x1a\x45\xdf\xa3") {
        // EBML: WebM only when the header names its doctype (not Matroska).
        let header = &head[..head.len().min(64)];
        return header
            .windows(4)
            .any(|w| w == b"webm")
            .then_some(Kind::Webm);
    }
    if at(0, b"OggS") {
        return Some(Kind::Ogg);
    }
    if at(0, b"%PDF-") {
        return Some(Kind::Pdf);
    }
    if at(0, b"ID3") || is_mpeg_audio_frame(head) {
        return Some(Kind::Mp3);
    }
    let mut text = TextCheck::default();
    (text.feed(head) && text.started_well()).then_some(Kind::Text)
}

/// An MPEG audio frame header: 11 sync bits, then no reserved version,
/// layer, bitrate or sample rate.
fn is_mpeg_audio_frame(head: &[u8]) -> bool {
    let [a, b, c, ..] = *head else {
        return false;
    };
    let version = (b >> 3) & 0b11;
    let layer = (b >> 1) & 0b11;
    let bitrate = c >> 4;
    let rate = (c >> 2) & 0b11;
    a == 0xff && b & 0xe0 == 0xe0 && version != 0b01 && layer != 0 && bitrate != 0xf && rate != 0b11
}

/// Checks that a stream of bytes is plain text: valid UTF-8, no NUL or other
/// control characters but tab, newline and carriage return, and not markup
/// (its first character after whitespace and a BOM is not `<`), so an HTML,
/// SVG or XML file cannot pass as text. Bytes arrive in any chunking.
#[derive(Debug, Default)]
pub struct TextCheck {
    /// The start of a UTF-8 sequence cut by a chunk boundary.
    carry: Vec<u8>,
    /// The first significant character seen, if any yet.
    first: Option<char>,
    failed: bool,
}

impl TextCheck {
    /// Checks the next bytes; false once the stream cannot be text.
    pub fn feed(&mut self, mut bytes: &[u8]) -> bool {
        if self.failed {
            return false;
        }
        // Complete a sequence cut at the previous chunk's end (at most 3 bytes).
        while !self.carry.is_empty() && !bytes.is_empty() {
            self.carry.push(bytes[0]);
            bytes = &bytes[1..];
            match std::str::from_utf8(&self.carry) {
                Ok(s) => {
                    let s = s.to_owned();
                    self.carry.clear();
                    if !self.check(&s) {
                        return false;
                    }
                }
                Err(e) if e.error_len().is_some() || self.carry.len() >= 4 => {
                    return self.fail();
                }
                Err(_) => {}
            }
        }
        let text = match std::str::from_utf8(bytes) {
            Ok(s) => s,
            Err(e) if e.error_len().is_none() => {
                // Cut mid-sequence: keep the tail for the next chunk.
                let (valid, tail) = bytes.split_at(e.valid_up_to());
                self.carry.extend_from_slice(tail);
                // `valid` is valid UTF-8 by construction.
                std::str::from_utf8(valid).unwrap_or_default()
            }
            Err(_) => return self.fail(),
        };
        self.check(text)
    }

    /// Whether the stream ended as text (no sequence left unfinished).
    pub fn finish(&self) -> bool {
        !self.failed && self.carry.is_empty() && self.started_well()
    }

    /// False once the first significant character is `<`.
    fn started_well(&self) -> bool {
        self.first != Some('<')
    }

    fn check(&mut self, s: &str) -> bool {
        if self.first.is_none() {
            self.first = s.chars().find(|c| !c.is_whitespace() && *c != '\u{feff}');
            if !self.started_well() {
                return self.fail();
            }
        }
        if s.chars()
            .any(|c| c.is_control() && !matches!(c, '\t' | '\n' | '\r'))
        {
            return self.fail();
        }
        true
    }

    fn fail(&mut self) -> bool {
        self.failed = true;
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn magic_numbers_decide_the_kind() {
        let cases: [(&[u8], Option<Kind>); 19] = [
            (b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR", Some(Kind::Png)),
            (b"\xff\xd8\xff\xe0\0\x10JFIF", Some(Kind::Jpeg)),
            (b"GIF89a\x01\0\x01\0", Some(Kind::Gif)),
            (b"RIFF\x10\0\0\0WEBPVP8 ", Some(Kind::Webp)),
            (b"RIFF\x10\0\0\0WAVEfmt ", Some(Kind::Wav)),
            (b"\0\0\0\x18ftypmp42\0\0\0\0", Some(Kind::Mp4)),
            (b"\0\0\0\x18ftypheic\0\0\0\0", None),
            (b"\x1a\x45\xdf\xa3\x9f\x42\x82\x84webm", Some(Kind::Webm)),
            (b"\x1a\x45\xdf\xa3\xa3\x42\x82\x88matroska", None),
            (b"OggS\0\x02", Some(Kind::Ogg)),
            (b"%PDF-1.7\n", Some(Kind::Pdf)),
            (b"ID3\x04\0\0", Some(Kind::Mp3)),
            (b"\xff\xfb\x90\x64", Some(Kind::Mp3)),
            (b"\xff\xf1\x50\x80", None), // AAC ADTS: layer 00
            (b"hello, world\n", Some(Kind::Text)),
            (b"  <svg xmlns='http://www.w3.org/2000/svg'/>", None),
            (b"\xef\xbb\xbf<!doctype html>", None),
            (b"\x7fELF\x02\x01\x01", None),
            (b"PK\x03\x04", None),
        ];
        for (bytes, kind) in cases {
            assert_eq!(sniff(bytes), kind, "{bytes:?}");
        }
    }

    #[test]
    fn text_check_works_across_chunks() {
        let text = "héllo wörld ✓ 🎉\r\n\tend".as_bytes();
        for cut in 0..text.len() {
            let mut check = TextCheck::default();
            assert!(check.feed(&text[..cut]), "cut at {cut}");
            assert!(check.feed(&text[cut..]), "cut at {cut}");
            assert!(check.finish(), "cut at {cut}");
        }
        let mut markup = TextCheck::default();
        assert!(markup.feed(b"   \n"));
        assert!(!markup.feed(b"  <html>"));
        for bad in [&b"a\0b"[..], b"a\x1bb", b"a\xc2\x85b", b"\xff", b"a\xc3"] {
            let mut check = TextCheck::default();
            assert!(!(check.feed(bad) && check.finish()), "{bad:?}");
        }
    }
}
