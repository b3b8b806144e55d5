//! producer (implemented in the producer issue).
