package api

import "net/http"

// getSettings is GET /v1/settings: the settings the aggregate log is
// folded under now, as the read models applied them (its latest
// log.settings decision: a settings.change records new ones mid-log), or
// before the first, the server's (Policy).
func (a *API) getSettings(w http.ResponseWriter, r *http.Request) {
	cfg, err := a.Store.Settings()
	if err != nil {
		storeErr(w, err)
		return
	}
	if cfg == nil && a.Policy != nil {
		// Nothing folded yet: the settings the fold records with its first
		// batch are the server's.
		if now, err := a.Policy(r.Context()); err == nil {
			cfg = &now
		}
	}
	if cfg == nil {
		writeErr(w, http.StatusServiceUnavailable, "the read models have applied no log.settings yet: retry")
		return
	}
	writeJSON(w, http.StatusOK, cfg)
}
