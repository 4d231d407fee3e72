//! Image previews (`src/media/preview.rs`) of whatever an upload holds
//! under the name of an image: the decoders run within their limits (run
//! with `-malloc_limit_mb=512`, above what the limits allow one image, so
//! an allocation past them is a crash), and a preview made fits in
//! `PREVIEW_EDGE` on each side and is what it says it is.
#![no_main]

use libfuzzer_sys::fuzz_target;
use roomcast::media::Kind;
use roomcast::media::preview::{PREVIEW_EDGE, make};
use roomcast::media::sniff::sniff;

const KINDS: [Kind; 4] = [Kind::Png, Kind::Jpeg, Kind::Webp, Kind::Gif];

fuzz_target!(|data: &[u8]| {
    let Some((&pick, bytes)) = data.split_first() else {
        return;
    };
    let kind = KINDS[usize::from(pick) % KINDS.len()];
    if let Ok(Some(preview)) = make(bytes, kind) {
        assert!(preview.width <= PREVIEW_EDGE && preview.height <= PREVIEW_EDGE);
        assert!(preview.width > 0 && preview.height > 0);
        assert!(matches!(preview.kind, Kind::Jpeg | Kind::Png));
        assert_eq!(sniff(&preview.bytes), Some(preview.kind));
    }
});
