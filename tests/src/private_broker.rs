//! A private RabbitMQ node that a fault test may kill and restart (written next).
