package events

// DecodeBatchFast is the batch decoder's fast path, for the tests that
// hold it to encoding/json.
var DecodeBatchFast = decodeBatchFast
