//! A private PostgreSQL cluster that a fault test may stop and start (written next).
