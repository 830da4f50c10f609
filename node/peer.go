package node

// maxPeerBody bounds a node-to-node body: a hand-off batch holds up to handoffChunkBytes of
// history, or one room's whole history when that is larger, plus its remembered ids.
func (c Config) maxPeerBody() int64 {
	frame := max(c.MaxFrame, int64(c.IngestMaxFrame))
	return int64(handoffChunkBytes) + int64(c.HistoryBytes) + frame + int64(c.DedupeIDs)*512 + 1<<20
}
