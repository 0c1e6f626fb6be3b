package election

// Exported for the external tests.
var (
	CampaignForTest    = campaign
	WaitDeletedForTest = waitDeleted
)
