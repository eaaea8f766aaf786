//! Model families. Each family reads top to bottom in its own file; building blocks shared by
//! several families live in `layers`.

pub mod layers;
pub mod toy;
