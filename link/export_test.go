package link

// MaxHandoff is the handoff's queue limit, for tests to lower.
var MaxHandoff = &maxHandoff
