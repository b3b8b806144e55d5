//! stream-reader (implemented in the stream-reader issue).
