package seen

// RunNames are the names of the runs m names, oldest first: what a store
// of runs keeps for m (the snapshot bucket's retention deletes the rest).
func (m Manifest) RunNames() ([]string, error) {
	names, _, err := m.parse()
	return names, err
}
