//! Exact money: decimal text into integer minor units. Never floating point.
