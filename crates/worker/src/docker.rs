//! Actions as Docker containers, through the Docker Engine API.
