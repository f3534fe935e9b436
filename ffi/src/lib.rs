//! libfedotp: the C ABI of fedotp.
