//! What previews cost (feature `previews`).
//!
//! ```text
//! preview_bench rates [--mpx 12] [--runs 5]
//!     previews per second of one thread, per format, from a --mpx image
//! preview_bench uploads --addr 127.0.0.1:8000 --rate 2 --duration 30 [--mpx 12]
//!     POST /upload of a --mpx JPEG --rate times a second (the load the
//!     fan-out comparison in docs/BENCHMARKS.md runs beside loadgen)
//! ```
//!
//! The images are made here: a smooth photo-like picture with fine detail,
//! so JPEG and PNG decode at realistic cost.

use std::io::Cursor;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use image::codecs::gif::GifEncoder;
use image::codecs::jpeg::JpegEncoder;
use image::codecs::webp::WebPEncoder;
use image::{DynamicImage, ExtendedColorType, Frame, ImageFormat, Rgb, RgbImage};
use roomcast::media::Kind;
use roomcast::media::preview;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const HELP: &str = "\
preview_bench rates [--mpx N] [--runs N]
preview_bench uploads --addr A --rate N --duration SECS [--mpx N]";

struct Args {
    mode: String,
    mpx: f64,
    runs: usize,
    addr: SocketAddr,
    rate: f64,
    duration: Duration,
}

fn args() -> Result<Args, String> {
    let mut it = std::env::args().skip(1);
    let mode = it.next().ok_or(HELP)?;
    let mut a = Args {
        mode,
        mpx: 12.0,
        runs: 5,
        addr: "127.0.0.1:8000".parse().map_err(|e| format!("{e}"))?,
        rate: 2.0,
        duration: Duration::from_secs(30),
    };
    while let Some(flag) = it.next() {
        let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let bad = |e: &dyn std::fmt::Display| format!("{flag} {value}: {e}");
        match flag.as_str() {
            "--mpx" => a.mpx = value.parse().map_err(|e| bad(&e))?,
            "--runs" => a.runs = value.parse().map_err(|e| bad(&e))?,
            "--addr" => a.addr = value.parse().map_err(|e| bad(&e))?,
            "--rate" => a.rate = value.parse().map_err(|e| bad(&e))?,
            "--duration" => a.duration = Duration::from_secs(value.parse().map_err(|e| bad(&e))?),
            _ => return Err(format!("unknown flag {flag}\n{HELP}")),
        }
    }
    Ok(a)
}

/// A 4:3 picture of about `mpx` megapixels.
fn picture(mpx: f64) -> RgbImage {
    let width = (mpx * 1e6 * 4.0 / 3.0).sqrt() as u32;
    let height = width * 3 / 4;
    RgbImage::from_fn(width, height, |x, y| {
        let ripple = ((x / 7 + y / 5) % 16) as u8 * 4;
        Rgb([
            (x * 200 / width) as u8 + ripple,
            (y * 200 / height) as u8 + ripple,
            ((x + y) % 97) as u8,
        ])
    })
}

fn jpeg(image: &RgbImage) -> Vec<u8> {
    let mut out = Vec::new();
    JpegEncoder::new_with_quality(&mut out, 90)
        .encode_image(image)
        .expect("encode JPEG");
    out
}

fn encoded(image: &RgbImage, kind: Kind) -> Vec<u8> {
    let mut out = Vec::new();
    match kind {
        Kind::Jpeg => out = jpeg(image),
        Kind::Png => DynamicImage::from(image.clone())
            .write_to(&mut Cursor::new(&mut out), ImageFormat::Png)
            .expect("encode PNG"),
        Kind::Webp => WebPEncoder::new_lossless(&mut out)
            .encode(
                image.as_raw(),
                image.width(),
                image.height(),
                ExtendedColorType::Rgb8,
            )
            .expect("encode WebP"),
        Kind::Gif => {
            let rgba = DynamicImage::from(image.clone()).to_rgba8();
            GifEncoder::new_with_speed(&mut out, 30)
                .encode_frame(Frame::new(rgba))
                .expect("encode GIF");
        }
        other => panic!("{other:?} is not an image"),
    }
    out
}

fn rates(a: &Args) {
    let image = picture(a.mpx);
    println!(
        "# one thread, {} x {} ({:.1} Mpx) to a {} px preview, {} runs each",
        image.width(),
        image.height(),
        f64::from(image.width() * image.height()) / 1e6,
        preview::PREVIEW_EDGE,
        a.runs
    );
    println!("| format | file | preview | ms per preview (min / median) | previews/s |");
    println!("|---|---|---|---|---|");
    for kind in [Kind::Jpeg, Kind::Png, Kind::Webp, Kind::Gif] {
        let bytes = encoded(&image, kind);
        let mut times = Vec::with_capacity(a.runs);
        let mut made = None;
        for _ in 0..a.runs {
            let start = Instant::now();
            made = Some(preview::make(&bytes, kind).expect("a preview"));
            times.push(start.elapsed());
        }
        times.sort();
        let median = times[times.len() / 2];
        let made = made.flatten().expect("large enough for a preview");
        println!(
            "| {} | {:.1} MiB | {}x{} {}, {:.1} KiB | {:.0} / {:.0} | {:.1} |",
            kind.content_type(),
            bytes.len() as f64 / 1048576.0,
            made.width,
            made.height,
            made.kind.ext(),
            made.bytes.len() as f64 / 1024.0,
            times[0].as_secs_f64() * 1e3,
            median.as_secs_f64() * 1e3,
            1.0 / median.as_secs_f64()
        );
    }
}

/// One `POST /upload`; the status code.
async fn upload(addr: SocketAddr, body: &[u8], boundary: &str) -> std::io::Result<u16> {
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    let head = format!(
        "POST /upload HTTP/1.1\r\nHost: {addr}\r\nContent-Type: multipart/form-data; \
         boundary={boundary}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body).await?;
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await?;
    let status = answer
        .get(9..12)
        .and_then(|s| std::str::from_utf8(s).ok())
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    Ok(status)
}

async fn uploads(a: &Args) {
    let boundary = "preview-bench-0c6f";
    let file = jpeg(&picture(a.mpx));
    let mut body = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"p.jpg\"\r\n\
         Content-Type: image/jpeg\r\n\r\n"
    )
    .into_bytes();
    body.extend_from_slice(&file);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    println!(
        "# uploading a {:.1} MiB JPEG ({:.0} Mpx) {} times a second for {:?}",
        file.len() as f64 / 1048576.0,
        a.mpx,
        a.rate,
        a.duration
    );
    let mut every = tokio::time::interval(Duration::from_secs_f64(1.0 / a.rate));
    let end = Instant::now() + a.duration;
    let (mut ok, mut refused) = (0u64, 0u64);
    while Instant::now() < end {
        every.tick().await;
        match upload(a.addr, &body, boundary).await {
            Ok(200) => ok += 1,
            Ok(status) => {
                refused += 1;
                eprintln!("upload answered {status}");
            }
            Err(e) => {
                refused += 1;
                eprintln!("upload failed: {e}");
            }
        }
    }
    println!("# {ok} uploads stored, {refused} refused or failed");
}

fn main() {
    let a = match args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    match a.mode.as_str() {
        "rates" => rates(&a),
        "uploads" => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime")
            .block_on(uploads(&a)),
        _ => {
            eprintln!("{HELP}");
            std::process::exit(2);
        }
    }
}
