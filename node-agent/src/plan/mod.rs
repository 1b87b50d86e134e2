//! Pure planning: API objects → desired kernel state.
