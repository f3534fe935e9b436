//! The federated learning maths that does not involve the model: the optimiser each client
//! owns, which clients train in a round, and how evaluations are scored and summarised.

mod metrics;
mod sampling;
mod sgd;

pub use metrics::{accuracy, macro_f1, F1Classes, MetricsError, Summary, SUMMARY_WINDOW};
pub use sampling::ClientSampler;
pub use sgd::{add_proximal_gradient, proximal_term, Sgd, SgdLengthError, SgdState};
