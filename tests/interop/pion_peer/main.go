// Command pion_peer is pion/webrtc v3 as a WHIP publisher or a WHEP viewer of mixcast, for
// tests/interop_pion.rs, or as a WHIP and WHEP server for mixcast's clients (server.go).
//
// It owns nothing but one PeerConnection for one run. Pion has no Opus encoder, so the
// publisher sends Opus packets the test made (a file of frames, each a 2-byte big-endian
// length and the packet, 20 ms apiece); the viewer writes every Opus RTP packet it receives
// to a file (2-byte sequence number, 4-byte timestamp, 2-byte length, payload; big-endian)
// for the test to decode. Only 127.0.0.1 is used: ICE gathers on the loopback interface
// only (UDP4, no mDNS, no STUN server), and any candidate that is not loopback is dropped
// from both the offer and the answer. Every wait is bounded; a failure exits non-zero with
// the reason on stderr. The last line of stdout is a JSON summary of what happened.
package main

import (
	"bufio"
	"encoding/binary"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/pion/ice/v2"
	"github.com/pion/webrtc"
	"github.com/pion/webrtc/pkg/media"
)

// The longest each step may take: gathering, the HTTP exchange, ICE plus DTLS.
const (
	gatherTimeout  = 5 * time.Second
	httpTimeout    = 10 * time.Second
	connectTimeout = 10 * time.Second
	frameDuration  = 20 * time.Millisecond
)

func main() {
	mode := flag.String("mode", "", "publish (WHIP), view (WHEP) or serve (a WHIP and WHEP server)")
	endpoint := flag.String("url", "", "the WHIP or WHEP endpoint")
	opusIn := flag.String("opus-in", "", "publish, serve: the Opus frames to send")
	rtpOut := flag.String("rtp-out", "", "view, serve: where to write the received Opus RTP packets")
	seconds := flag.Float64("seconds", 4, "view: how long to receive once connected")
	offerOut := flag.String("offer-out", "", "where to write the offer as POSTed (optional)")
	listen := flag.String("listen", "127.0.0.1:0", "serve: the HTTP address")
	flag.Parse()

	var summary map[string]interface{}
	var err error
	switch *mode {
	case "publish":
		summary, err = publish(*endpoint, *opusIn, *offerOut)
	case "view":
		summary, err = view(*endpoint, *rtpOut, *offerOut, time.Duration(*seconds*float64(time.Second)))
	case "serve":
		summary, err = serve(*listen, *rtpOut, *opusIn, time.Duration(*seconds*float64(time.Second)))
	default:
		err = fmt.Errorf("-mode must be publish or view, not %q", *mode)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "pion_peer:", err)
		os.Exit(1)
	}
	line, _ := json.Marshal(summary)
	fmt.Println(string(line))
}

// newPeerConnection makes a PeerConnection that gathers only a UDP4 host candidate on
// 127.0.0.1: pion skips loopback interfaces unless told to include them.
func newPeerConnection() (*webrtc.PeerConnection, error) {
	var se webrtc.SettingEngine
	se.SetIncludeLoopbackCandidate(true)
	se.SetInterfaceFilter(func(name string) bool { return name == "lo" })
	se.SetIPFilter(func(ip net.IP) bool { return ip.Equal(net.IPv4(127, 0, 0, 1)) })
	se.SetNetworkTypes([]webrtc.NetworkType{webrtc.NetworkTypeUDP4})
	se.SetICEMulticastDNSMode(ice.MulticastDNSModeDisabled)
	m := &webrtc.MediaEngine{}
	if err := m.RegisterDefaultCodecs(); err != nil {
		return nil, err
	}
	api := webrtc.NewAPI(webrtc.WithMediaEngine(m), webrtc.WithSettingEngine(se))
	return api.NewPeerConnection(webrtc.Configuration{})
}

// loopbackOnly drops every candidate line whose address is not 127.0.0.1 (another
// interface, IPv6, an mDNS .local name).
func loopbackOnly(sdp string) (string, int) {
	var kept []string
	dropped := 0
	for _, line := range strings.SplitAfter(sdp, "\n") {
		trimmed := strings.TrimRight(line, "\r\n")
		if strings.HasPrefix(trimmed, "a=candidate:") {
			fields := strings.Fields(trimmed)
			if len(fields) < 6 || fields[4] != "127.0.0.1" {
				dropped++
				continue
			}
		}
		kept = append(kept, line)
	}
	return strings.Join(kept, ""), dropped
}

// connectedWatch returns a channel closed once the connection is connected, and one that
// gets an error when it fails or closes first.
func connectedWatch(pc *webrtc.PeerConnection) (<-chan struct{}, <-chan error) {
	connected := make(chan struct{})
	failed := make(chan error, 1)
	done := false
	pc.OnConnectionStateChange(func(s webrtc.PeerConnectionState) {
		fmt.Fprintln(os.Stderr, "pion_peer: connection", s)
		switch s {
		case webrtc.PeerConnectionStateConnected:
			if !done {
				done = true
				close(connected)
			}
		case webrtc.PeerConnectionStateFailed, webrtc.PeerConnectionStateClosed:
			select {
			case failed <- fmt.Errorf("connection %s", s):
			default:
			}
		}
	})
	return connected, failed
}

// negotiate gathers, POSTs the offer (loopback candidates only), applies the answer and
// waits until connected. Returns the session URL and the time from the POST to connected.
func negotiate(pc *webrtc.PeerConnection, endpoint, offerOut string) (string, time.Duration, error) {
	connected, failed := connectedWatch(pc)
	offer, err := pc.CreateOffer(nil)
	if err != nil {
		return "", 0, err
	}
	gathered := webrtc.GatheringCompletePromise(pc)
	if err := pc.SetLocalDescription(offer); err != nil {
		return "", 0, err
	}
	select {
	case <-gathered:
	case <-time.After(gatherTimeout):
		return "", 0, errors.New("ICE gathering did not complete")
	}
	sdp, dropped := loopbackOnly(pc.LocalDescription().SDP)
	fmt.Fprintf(os.Stderr, "pion_peer: %d non-loopback candidates dropped from the offer\n", dropped)
	if !strings.Contains(sdp, "a=candidate:") {
		return "", 0, errors.New("no 127.0.0.1 candidate gathered")
	}
	if offerOut != "" {
		_ = os.WriteFile(offerOut, []byte(sdp), 0o644)
	}

	started := time.Now()
	client := &http.Client{Timeout: httpTimeout}
	resp, err := client.Post(endpoint, "application/sdp", strings.NewReader(sdp))
	if err != nil {
		return "", 0, err
	}
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		return "", 0, fmt.Errorf("POST %s: %s: %s", endpoint, resp.Status, strings.TrimSpace(string(body)))
	}
	base, err := url.Parse(endpoint)
	if err != nil {
		return "", 0, err
	}
	location, err := base.Parse(resp.Header.Get("Location"))
	if err != nil || resp.Header.Get("Location") == "" {
		return "", 0, fmt.Errorf("201 without a usable Location: %q", resp.Header.Get("Location"))
	}
	answer, _ := loopbackOnly(string(body))
	if err := pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeAnswer, SDP: answer}); err != nil {
		return location.String(), 0, fmt.Errorf("the answer: %w\n%s", err, answer)
	}
	select {
	case <-connected:
	case err := <-failed:
		return location.String(), 0, err
	case <-time.After(connectTimeout):
		return location.String(), 0, fmt.Errorf("not connected %s after the answer", connectTimeout)
	}
	return location.String(), time.Since(started), nil
}

// hangUp DELETEs the session; its status goes into the summary.
func hangUp(session string) string {
	req, err := http.NewRequest(http.MethodDelete, session, nil)
	if err != nil {
		return err.Error()
	}
	resp, err := (&http.Client{Timeout: httpTimeout}).Do(req)
	if err != nil {
		return err.Error()
	}
	resp.Body.Close()
	return resp.Status
}

// readFrames reads the test's Opus frames: a 2-byte big-endian length, then the packet.
func readFrames(path string) ([][]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	r := bufio.NewReader(f)
	var frames [][]byte
	for {
		var n uint16
		if err := binary.Read(r, binary.BigEndian, &n); err == io.EOF {
			return frames, nil
		} else if err != nil {
			return nil, err
		}
		frame := make([]byte, n)
		if _, err := io.ReadFull(r, frame); err != nil {
			return nil, fmt.Errorf("%s: frame %d cut short: %w", path, len(frames), err)
		}
		frames = append(frames, frame)
	}
}

func publish(endpoint, opusIn, offerOut string) (map[string]interface{}, error) {
	frames, err := readFrames(opusIn)
	if err != nil {
		return nil, err
	}
	if len(frames) == 0 {
		return nil, fmt.Errorf("%s holds no Opus frames", opusIn)
	}
	pc, err := newPeerConnection()
	if err != nil {
		return nil, err
	}
	defer pc.Close()
	track, err := webrtc.NewTrackLocalStaticSample(webrtc.RTPCodecCapability{
		MimeType:    webrtc.MimeTypeOpus,
		ClockRate:   48000,
		Channels:    2,
		SDPFmtpLine: "minptime=10;useinbandfec=1;stereo=1;sprop-stereo=1",
	}, "audio", "pion")
	if err != nil {
		return nil, err
	}
	sender, err := pc.AddTransceiverFromTrack(track, webrtc.RTPTransceiverInit{Direction: webrtc.RTPTransceiverDirectionSendonly})
	if err != nil {
		return nil, err
	}
	// RTCP must be read for pion's interceptors (receiver reports, NACK) to run.
	go func() {
		buf := make([]byte, 1500)
		for {
			if _, _, err := sender.Sender().Read(buf); err != nil {
				return
			}
		}
	}()
	session, connectedAfter, err := negotiate(pc, endpoint, offerOut)
	if err != nil {
		if session != "" {
			hangUp(session)
		}
		return nil, err
	}
	ticker := time.NewTicker(frameDuration)
	defer ticker.Stop()
	sent := 0
	for _, frame := range frames {
		<-ticker.C
		if err := track.WriteSample(media.Sample{Data: frame, Duration: frameDuration}); err != nil {
			return nil, fmt.Errorf("frame %d: %w", sent, err)
		}
		sent++
	}
	return map[string]interface{}{
		"mode":               "publish",
		"frames_sent":        sent,
		"connected_after_ms": connectedAfter.Milliseconds(),
		"delete":             hangUp(session),
	}, nil
}

func view(endpoint, rtpOut, offerOut string, duration time.Duration) (map[string]interface{}, error) {
	out, err := os.Create(rtpOut)
	if err != nil {
		return nil, err
	}
	defer out.Close()
	w := bufio.NewWriter(out)
	pc, err := newPeerConnection()
	if err != nil {
		return nil, err
	}
	defer pc.Close()
	if _, err := pc.AddTransceiverFromKind(webrtc.RTPCodecTypeAudio, webrtc.RTPTransceiverInit{Direction: webrtc.RTPTransceiverDirectionRecvonly}); err != nil {
		return nil, err
	}
	// One track expected; its packets go to `packets` so that only this goroutine writes.
	type packet struct {
		seq     uint16
		ts      uint32
		payload []byte
	}
	packets := make(chan packet, 1024)
	codec := make(chan webrtc.RTPCodecParameters, 1)
	pc.OnTrack(func(t *webrtc.TrackRemote, _ *webrtc.RTPReceiver) {
		select {
		case codec <- t.Codec():
		default:
		}
		for {
			p, _, err := t.ReadRTP()
			if err != nil {
				return
			}
			packets <- packet{p.SequenceNumber, p.Timestamp, append([]byte(nil), p.Payload...)}
		}
	})
	session, connectedAfter, err := negotiate(pc, endpoint, offerOut)
	if err != nil {
		if session != "" {
			hangUp(session)
		}
		return nil, err
	}
	deadline := time.After(duration)
	received := 0
	var header [8]byte
loop:
	for {
		select {
		case p := <-packets:
			binary.BigEndian.PutUint16(header[0:], p.seq)
			binary.BigEndian.PutUint32(header[2:], p.ts)
			binary.BigEndian.PutUint16(header[6:], uint16(len(p.payload)))
			w.Write(header[:])
			w.Write(p.payload)
			received++
		case <-deadline:
			break loop
		}
	}
	if err := w.Flush(); err != nil {
		return nil, err
	}
	summary := map[string]interface{}{
		"mode":               "view",
		"packets":            received,
		"connected_after_ms": connectedAfter.Milliseconds(),
		"delete":             hangUp(session),
	}
	select {
	case c := <-codec:
		summary["codec"] = c.MimeType
		summary["clock_rate"] = c.ClockRate
		summary["channels"] = c.Channels
		summary["fmtp"] = c.SDPFmtpLine
	default:
		summary["codec"] = nil
	}
	return summary, nil
}
