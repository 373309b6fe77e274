//! Media plane: RTP header view and writer, G.711, SDP offer/answer, announcement loading and
//! pacing, and the per-direction recording track. Everything here is sans-IO except
//! [`announcement::Announcement::load`], which reads one file; the relay shell does the sockets.
pub mod announcement;
pub mod g711;
pub mod rtp;
pub mod sdp;
pub mod track;
pub mod relay;
