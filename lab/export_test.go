package lab

// FailAt makes AddHost and Connect fail at stage ("node": after the
// namespace is made; "link": after the devices and captures are made)
// until the returned function is called.
func FailAt(stage string, err error) (restore func()) {
	failHook = func(s string) error {
		if s == stage {
			return err
		}
		return nil
	}
	return func() { failHook = nil }
}
