-- Keeper events are typed (the Solidity events of provider/src/protocol/events.rs): each
-- event's data holds its fields as named there. Rewrite what version 0001 wrote.

-- Every event names its agreement.
UPDATE events SET data = json_set(data, '$.agreementId', agreement_id)
 WHERE json_extract(data, '$.agreementId') IS NULL;

-- DIDs are bytes32 in the events (0x-hex), not did:op: strings.
UPDATE events SET data = json_set(data, '$.did', '0x' || substr(json_extract(data, '$.did'), 8))
 WHERE name = 'ExecuteAgreement' AND json_extract(data, '$.did') LIKE 'did:op:%';

UPDATE events SET data = json_remove(json_set(data, '$.outputDid', '0x' || substr(json_extract(data, '$.did'), 8)), '$.did')
 WHERE name = 'OutputPublished' AND json_extract(data, '$.did') LIKE 'did:op:%';

-- PaymentReleased carries the receipt hash and the split; the fuel is in the receipt.
UPDATE events SET data = json_remove(data, '$.fuelConsumed') WHERE name = 'PaymentReleased';
