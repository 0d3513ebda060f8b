//! The demo models' data and training, behind the `train` feature so the
//! serving library does not carry them: `synthetic` generates the seeded
//! fraud-scoring rows, `training` fits the demo networks with candle and
//! writes them as a model repository (`candela-train`, the tests' fixtures).

pub mod synthetic;
pub mod training;
