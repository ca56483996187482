package mesh

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
)

// The closed mesh (Config.ClusterKey). Two keys are derived from the 32-byte cluster key with
// HKDF-SHA256, each under its own info label, so neither use weakens the other:
//
//   - gossip: one 32-byte memberlist SecretKey (AES-256-GCM inside memberlist), label
//     gossipKeyInfo;
//   - envelopes: one AES-256-GCM key per sender incarnation, label envelopeKeyInfo + the
//     sender's Serf name (logical name + "-" + 64-bit random incarnation). A per-sender key lets
//     every sender use a plain 64-bit counter as its nonce: no nonce is ever repeated under one
//     key (a restarted process has a new incarnation, so a new key), there is no random-nonce
//     birthday limit, and the receiver, which dials exactly one sender per SUB socket, knows
//     which key to try. It also binds each envelope to its sender: a key holder's envelope
//     cannot pass as another member's.
//
// Sealed frame 1 (everything after the topic frame):
//
//	0x01 | counter (8 bytes, big-endian) | AES-256-GCM(envelope) with its 16-byte tag
//
// nonce = 4 zero bytes | counter; associated data = the topic frame, so an envelope moved to
// another topic (a publication batch replayed onto someone else's mailbox or onto the control
// topic) fails to open. A sender seals and hands to the PUB socket under one lock, and zmq4's
// PUB writes messages in the order they were handed over, so each link sees strictly increasing
// counters; the receiver drops anything not above the last counter it accepted (replay).
//
// The first byte 0x01 is also an invalid protobuf tag (field number 0), so an open (keyless)
// receiver can never mistake a sealed frame for an envelope; it counts it as reason "sealed".

// ClusterKeyLen is the length of Config.ClusterKey in bytes.
const ClusterKeyLen = 32

const (
	sealVersion  = 0x01
	sealHeader   = 1 + 8 // version + counter
	sealOverhead = sealHeader + 16

	gossipKeyInfo   = "sockmesh/v1 gossip key"
	envelopeKeyInfo = "sockmesh/v1 envelope key\x00"
)

// Reasons (label "reason" of sockmesh_mesh_rejected_envelopes_total).
const (
	rejectUnsealed = "unsealed" // keyed node: frame is not a sealed envelope (a keyless sender, or garbage)
	rejectAuth     = "auth"     // keyed node: authentication failed (wrong key, tampered, other topic)
	rejectReplay   = "replay"   // keyed node: counter not above the last accepted one
	rejectSealed   = "sealed"   // open node: the sender seals (it has a cluster key, we have none)
	rejectDecode   = "decode"   // not a valid protobuf envelope
	rejectOrigin   = "origin"   // envelope from another incarnation than the linked peer
	rejectSnapshot = "snapshot" // a snapshot part out of order, or a snapshot over MaxPeerChannels
)

var errOpen = errors.New("mesh: envelope failed to open")

// deriveGossipKey returns the memberlist SecretKey for a cluster key.
func deriveGossipKey(clusterKey []byte) ([]byte, error) {
	return hkdf.Key(sha256.New, clusterKey, nil, gossipKeyInfo, 32)
}

// envelopeAEAD returns the AEAD that seals the envelopes sent by the member serfName.
func envelopeAEAD(clusterKey []byte, serfName string) (cipher.AEAD, error) {
	k, err := hkdf.Key(sha256.New, clusterKey, nil, envelopeKeyInfo+serfName, 32)
	if err != nil {
		return nil, err
	}
	blk, err := aes.NewCipher(k)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(blk)
}

func sealNonce(counter uint64) [12]byte {
	var n [12]byte
	binary.BigEndian.PutUint64(n[4:], counter)
	return n
}

// sealEnvelope appends the sealed form of plain (for topic) to dst.
func sealEnvelope(dst []byte, aead cipher.AEAD, counter uint64, topic, plain []byte) []byte {
	dst = append(dst, sealVersion)
	dst = binary.BigEndian.AppendUint64(dst, counter)
	nonce := sealNonce(counter)
	return aead.Seal(dst, nonce[:], plain, topic)
}

// openEnvelope authenticates and decrypts a sealed frame received on topic, in place (frame is
// overwritten). It returns the plaintext, the frame's counter, and on failure the reject reason.
// It does not check the counter against earlier ones.
func openEnvelope(aead cipher.AEAD, topic, frame []byte) (plain []byte, counter uint64, reason string) {
	if len(frame) < sealOverhead || frame[0] != sealVersion {
		return nil, 0, rejectUnsealed
	}
	counter = binary.BigEndian.Uint64(frame[1:sealHeader])
	nonce := sealNonce(counter)
	ct := frame[sealHeader:]
	plain, err := aead.Open(ct[:0], nonce[:], ct, topic)
	if err != nil {
		return nil, 0, rejectAuth
	}
	return plain, counter, ""
}

// sendEnvelope sends one encoded envelope on topic: sealed under our key if the mesh is closed.
// owned says env may be handed to the PUB socket as is (otherwise it is copied; the PUB keeps
// the frame until written). Sealing and handing over happen under sealMu, so counters reach
// every link in increasing order.
func (m *Mesh) sendEnvelope(topic, env []byte, owned bool) bool {
	if m.sealer == nil {
		if !owned {
			env = append([]byte(nil), env...)
		}
		return m.pubSend(topic, env)
	}
	out := make([]byte, 0, len(env)+sealOverhead)
	m.sealMu.Lock()
	defer m.sealMu.Unlock()
	m.sealCounter++
	out = sealEnvelope(out, m.sealer, m.sealCounter, topic, env)
	return m.pubSend(topic, out)
}

// validateClusterKey checks Config.ClusterKey.
func validateClusterKey(k []byte) error {
	if len(k) == 0 {
		return nil
	}
	if len(k) != ClusterKeyLen {
		return fmt.Errorf("mesh: Config.ClusterKey must be %d bytes, got %d", ClusterKeyLen, len(k))
	}
	zero := true
	for _, b := range k {
		if b != 0 {
			zero = false
			break
		}
	}
	if zero {
		return errors.New("mesh: Config.ClusterKey is all zero bytes")
	}
	return nil
}
