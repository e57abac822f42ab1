//! `pod-rebalancer plan` on saved responses.
