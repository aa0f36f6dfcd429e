"""What every driver would otherwise write again (docs/driver-contract.md, "Shared
plumbing"); it stands on the contract and the leaves only, like the drivers."""
