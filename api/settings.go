package api

import "net/http"

// getSettings is GET /v1/settings: the settings the aggregate log is
// folded under now, as the read models applied them (its latest
// log.settings decision: a settings.change records new ones mid-log).
func (a *API) getSettings(w http.ResponseWriter, r *http.Request) {
	cfg, err := a.Store.Settings()
	if err != nil {
		storeErr(w, err)
		return
	}
	if cfg == nil {
		writeErr(w, http.StatusServiceUnavailable, "the read models have applied no log.settings yet: retry")
		return
	}
	writeJSON(w, http.StatusOK, cfg)
}
