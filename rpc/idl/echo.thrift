// The Echo service every leaklab scenario speaks. Field tags matter: the
// guide teaches reading a leak's field from the decoder frame that names it
// (`read_field_2` is tag 2, `msg`).
namespace py echo
namespace rs echo

struct Request {
  1: required i64 id,
  2: required binary msg,
  3: optional string json,
}

struct Response {
  1: required i64 id,
  2: required binary msg,
  3: optional string json,
}

service Echo {
  Response echo(1: Request req),
}
