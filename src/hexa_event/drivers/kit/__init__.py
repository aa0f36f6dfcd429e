"""What every driver would otherwise write again: typed URL query options
(:mod:`.query`) and the wire codecs two engines share (:mod:`.goenvelope`,
:mod:`.textheaders`). It stands on the contract and the leaves only, like the drivers;
the redaction rules are the leaf :mod:`hexa_event.redaction`."""
