package credential

// SetAfterStep installs the step hook for a test (the crash tests' child
// process kills itself there).
func SetAfterStep(f func(step string)) { afterStep = f }
