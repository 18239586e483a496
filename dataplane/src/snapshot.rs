//! placeholder: written in progress
