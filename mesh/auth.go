package mesh

import (
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net"
)

// Link authentication of a closed mesh (Config.ClusterKey). Before zmq4 sees a single byte of a
// mesh connection, both ends prove that they hold the cluster key, so a stranger who reaches
// the mesh port learns nothing (no ZMTP greeting, no topics, no names, no traffic volume) and
// costs one short-lived connection. Sealing (seal.go) still protects every envelope; this
// keeps strangers out of the transport itself.
//
// The exchange has fixed sizes, so nothing is ever allocated from a length the peer sends:
//
//	dialler  → acceptor: authMagic (8) | nonceD (32)
//	acceptor → dialler:  authMagic (8) | nonceA (32)
//	dialler  → acceptor: HMAC-SHA256(k, "dial"   | nonceD | nonceA)   (32)
//	acceptor → dialler:  HMAC-SHA256(k, "accept" | nonceD | nonceA)   (32)
//
// k is derived from the cluster key with HKDF under its own label. Fresh nonces on both sides
// make a recorded exchange useless; the role label stops an acceptor's proof from being
// reflected back as a dialler's. The acceptor proves itself only after the dialler did, so a
// stranger never obtains a MAC it could not compute. The whole exchange runs under the
// handshake deadline.

const (
	authMagic   = "SMAUTH1\x00"
	authNonce   = 32
	authMACLen  = sha256.Size
	authKeyInfo = "sockmesh/v1 link auth key"
)

var errAuth = errors.New("mesh: link authentication failed")

func deriveAuthKey(clusterKey []byte) ([]byte, error) {
	return hkdf.Key(sha256.New, clusterKey, nil, authKeyInfo, 32)
}

func authMAC(key []byte, role string, nonceD, nonceA []byte) []byte {
	h := hmac.New(sha256.New, key)
	h.Write([]byte(role))
	h.Write(nonceD)
	h.Write(nonceA)
	return h.Sum(nil)
}

// authDial proves the key to the acceptor at the other end of c and checks its proof.
func authDial(c net.Conn, key []byte) error {
	var hello [len(authMagic) + authNonce]byte
	copy(hello[:], authMagic)
	nonceD := hello[len(authMagic):]
	if _, err := rand.Read(nonceD); err != nil {
		return err
	}
	if _, err := c.Write(hello[:]); err != nil {
		return err
	}
	var theirs [len(authMagic) + authNonce]byte
	if _, err := io.ReadFull(c, theirs[:]); err != nil {
		return fmt.Errorf("%w: no answer: %w", errAuth, err)
	}
	if string(theirs[:len(authMagic)]) != authMagic {
		return fmt.Errorf("%w: the peer does not speak closed-mesh authentication (no cluster key?)", errAuth)
	}
	nonceA := theirs[len(authMagic):]
	if _, err := c.Write(authMAC(key, "dial", nonceD, nonceA)); err != nil {
		return err
	}
	var proof [authMACLen]byte
	if _, err := io.ReadFull(c, proof[:]); err != nil {
		return fmt.Errorf("%w: the peer refused our proof (another cluster key?): %w", errAuth, err)
	}
	if !hmac.Equal(proof[:], authMAC(key, "accept", nonceD, nonceA)) {
		return fmt.Errorf("%w: the peer's proof is wrong (another cluster key)", errAuth)
	}
	return nil
}

// authAccept checks the dialler's proof of the key, then proves it in turn.
func authAccept(c net.Conn, key []byte) error {
	var theirs [len(authMagic) + authNonce]byte
	// The magic first, so that anything else (a ZMTP greeting of a keyless node, a scanner) is
	// refused at once rather than at the handshake deadline.
	if _, err := io.ReadFull(c, theirs[:len(authMagic)]); err != nil {
		return fmt.Errorf("%w: short hello: %w", errAuth, err)
	}
	if string(theirs[:len(authMagic)]) != authMagic {
		return fmt.Errorf("%w: no hello", errAuth)
	}
	if _, err := io.ReadFull(c, theirs[len(authMagic):]); err != nil {
		return fmt.Errorf("%w: short hello: %w", errAuth, err)
	}
	nonceD := theirs[len(authMagic):]
	var hello [len(authMagic) + authNonce]byte
	copy(hello[:], authMagic)
	nonceA := hello[len(authMagic):]
	if _, err := rand.Read(nonceA); err != nil {
		return err
	}
	if _, err := c.Write(hello[:]); err != nil {
		return err
	}
	var proof [authMACLen]byte
	if _, err := io.ReadFull(c, proof[:]); err != nil {
		return fmt.Errorf("%w: no proof: %w", errAuth, err)
	}
	if !hmac.Equal(proof[:], authMAC(key, "dial", nonceD, nonceA)) {
		return fmt.Errorf("%w: wrong proof (another cluster key)", errAuth)
	}
	_, err := c.Write(authMAC(key, "accept", nonceD, nonceA))
	return err
}
