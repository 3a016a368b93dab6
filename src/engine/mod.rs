//! The interpreter, scheduler, executor and result writer.
