//! Reading, diffing and applying kernel state (effects). See kernel/README in mod docs.
