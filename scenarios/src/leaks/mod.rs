//! One module per leak the guide documents, and what the connection-surge
//! leaks share (`surge`).

pub(crate) mod conn_surge_request;
pub(crate) mod conn_surge_response_copy;
pub(crate) mod conn_surge_response_nocopy;
pub(crate) mod duplicate_clients;
pub(crate) mod idle_connections;
pub(crate) mod oversized_request;
pub(crate) mod request_field_hold;
pub(crate) mod response_field_hold;
pub(crate) mod sonic_string_hold;
mod surge;
