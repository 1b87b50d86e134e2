//! One module per network driver, behind one trait (see plan::Driver).
