//! A file on disk as a response body, read in bounded chunks as the
//! connection takes them: a download never holds more than one chunk of the
//! file in memory, however large the file or slow the reader. Used for
//! uploads (`/uploads/…`, with ranges) and `--static-dir` files.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Bytes, BytesMut};
use hyper::body::{Frame, SizeHint};
use tokio::io::{AsyncRead, ReadBuf};

/// Opens the regular file at `path`: the file and its length, `Ok(None)` if
/// there is none (a missing file, or something that is not a file).
pub async fn open_regular(path: &std::path::Path) -> io::Result<Option<(tokio::fs::File, u64)>> {
    let file = match tokio::fs::File::open(path).await {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let meta = file.metadata().await?;
    Ok(meta.is_file().then_some((file, meta.len())))
}

/// The most read from the file at once.
const CHUNK: usize = 64 << 10;

/// `remaining` bytes of `file` (from its current position) as a body.
pub struct FileBody {
    file: tokio::fs::File,
    remaining: u64,
    buf: BytesMut,
}

impl FileBody {
    /// The next `remaining` bytes of `file`.
    pub fn new(file: tokio::fs::File, remaining: u64) -> Self {
        Self {
            file,
            remaining,
            buf: BytesMut::new(),
        }
    }
}

impl hyper::body::Body for FileBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let this = self.get_mut();
        if this.remaining == 0 {
            return Poll::Ready(None);
        }
        let want = usize::try_from(this.remaining).map_or(CHUNK, |r| r.min(CHUNK));
        if this.buf.len() < want {
            this.buf.resize(want, 0);
        }
        let mut read = ReadBuf::new(&mut this.buf[..want]);
        ready!(Pin::new(&mut this.file).poll_read(cx, &mut read))?;
        let n = read.filled().len();
        if n == 0 {
            // The file shrank while it was being sent: end the response
            // with an error rather than send fewer bytes than promised.
            return Poll::Ready(Some(Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the file is shorter than it was",
            ))));
        }
        this.remaining -= n as u64;
        Poll::Ready(Some(Ok(Frame::data(this.buf.split_to(n).freeze()))))
    }

    fn is_end_stream(&self) -> bool {
        self.remaining == 0
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.remaining)
    }
}
