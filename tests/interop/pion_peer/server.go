// The -mode serve half of pion_peer: pion/webrtc v3 as a small WHIP and WHEP server, the
// remote end of `mixcast push` and `mixcast pull` in tests/push_pull.rs.
//
// POST /whip takes one publisher's audio and writes every Opus RTP packet it receives to
// -rtp-out (the view mode's record format); POST /whep sends the -opus-in frames (looped,
// 20 ms apiece) to a viewer. DELETE on a session URL closes it. Answers carry the gathered
// 127.0.0.1 candidates only. It serves for -seconds, then prints a JSON summary and exits.
package main

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/pion/webrtc"
	"github.com/pion/webrtc/pkg/media"
)

type server struct {
	mu       sync.Mutex
	sessions map[string]*webrtc.PeerConnection
	next     int
	rtpOut   *bufio.Writer
	received int
	deleted  int
	frames   [][]byte
}

func serve(listen, rtpOut, opusIn string, duration time.Duration) (map[string]interface{}, error) {
	s := &server{sessions: map[string]*webrtc.PeerConnection{}}
	if rtpOut != "" {
		f, err := os.Create(rtpOut)
		if err != nil {
			return nil, err
		}
		defer f.Close()
		s.rtpOut = bufio.NewWriter(f)
	}
	if opusIn != "" {
		frames, err := readFrames(opusIn)
		if err != nil {
			return nil, err
		}
		s.frames = frames
	}
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return nil, err
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/whip", func(w http.ResponseWriter, r *http.Request) { s.post(w, r, true) })
	mux.HandleFunc("/whep", func(w http.ResponseWriter, r *http.Request) { s.post(w, r, false) })
	mux.HandleFunc("/session/", s.delete)
	go http.Serve(ln, mux)
	time.Sleep(duration)
	ln.Close()
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, pc := range s.sessions {
		pc.Close()
	}
	if s.rtpOut != nil {
		if err := s.rtpOut.Flush(); err != nil {
			return nil, err
		}
	}
	return map[string]interface{}{
		"mode":     "serve",
		"packets":  s.received,
		"deleted":  s.deleted,
		"sessions": s.next,
	}, nil
}

func (s *server) post(w http.ResponseWriter, r *http.Request, whip bool) {
	if r.Method != http.MethodPost {
		http.Error(w, "POST only", http.StatusMethodNotAllowed)
		return
	}
	offer, _ := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	pc, err := newPeerConnection()
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	if whip {
		pc.OnTrack(func(t *webrtc.TrackRemote, _ *webrtc.RTPReceiver) { s.record(t) })
	} else if err := s.sendFrames(pc); err != nil {
		pc.Close()
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	clean, _ := loopbackOnly(string(offer))
	if err := pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeOffer, SDP: clean}); err != nil {
		pc.Close()
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	answer, err := pc.CreateAnswer(nil)
	if err != nil {
		pc.Close()
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	gathered := webrtc.GatheringCompletePromise(pc)
	if err := pc.SetLocalDescription(answer); err != nil {
		pc.Close()
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	select {
	case <-gathered:
	case <-time.After(gatherTimeout):
		pc.Close()
		http.Error(w, "ICE gathering did not complete", http.StatusInternalServerError)
		return
	}
	sdp, _ := loopbackOnly(pc.LocalDescription().SDP)
	s.mu.Lock()
	s.next++
	id := fmt.Sprintf("/session/%d", s.next)
	s.sessions[id] = pc
	s.mu.Unlock()
	fmt.Fprintln(os.Stderr, "pion_peer: session", id, "whip:", whip)
	w.Header().Set("Content-Type", "application/sdp")
	w.Header().Set("Location", id)
	w.WriteHeader(http.StatusCreated)
	io.WriteString(w, sdp)
}

// record writes the publisher's Opus RTP packets to -rtp-out.
func (s *server) record(t *webrtc.TrackRemote) {
	var header [8]byte
	for {
		p, _, err := t.ReadRTP()
		if err != nil {
			return
		}
		if !strings.EqualFold(t.Codec().MimeType, webrtc.MimeTypeOpus) || s.rtpOut == nil {
			continue
		}
		s.mu.Lock()
		binary.BigEndian.PutUint16(header[0:], p.SequenceNumber)
		binary.BigEndian.PutUint32(header[2:], p.Timestamp)
		binary.BigEndian.PutUint16(header[6:], uint16(len(p.Payload)))
		s.rtpOut.Write(header[:])
		s.rtpOut.Write(p.Payload)
		s.received++
		s.mu.Unlock()
	}
}

// sendFrames adds a stereo Opus track that plays the -opus-in frames in a loop.
func (s *server) sendFrames(pc *webrtc.PeerConnection) error {
	if len(s.frames) == 0 {
		return fmt.Errorf("no -opus-in frames to send")
	}
	track, err := webrtc.NewTrackLocalStaticSample(webrtc.RTPCodecCapability{
		MimeType:    webrtc.MimeTypeOpus,
		ClockRate:   48000,
		Channels:    2,
		SDPFmtpLine: "minptime=10;useinbandfec=1;stereo=1;sprop-stereo=1",
	}, "audio", "pion")
	if err != nil {
		return err
	}
	sender, err := pc.AddTrack(track)
	if err != nil {
		return err
	}
	go func() {
		buf := make([]byte, 1500)
		for {
			if _, _, err := sender.Read(buf); err != nil {
				return
			}
		}
	}()
	go func() {
		ticker := time.NewTicker(frameDuration)
		defer ticker.Stop()
		for i := 0; ; i++ {
			<-ticker.C
			if pc.ConnectionState() == webrtc.PeerConnectionStateClosed {
				return
			}
			frame := s.frames[i%len(s.frames)]
			if err := track.WriteSample(media.Sample{Data: frame, Duration: frameDuration}); err != nil {
				return
			}
		}
	}()
	return nil
}

func (s *server) delete(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodDelete {
		http.Error(w, "DELETE only", http.StatusMethodNotAllowed)
		return
	}
	s.mu.Lock()
	pc, ok := s.sessions[r.URL.Path]
	delete(s.sessions, r.URL.Path)
	if ok {
		s.deleted++
	}
	s.mu.Unlock()
	if !ok {
		http.NotFound(w, r)
		return
	}
	pc.Close()
	w.WriteHeader(http.StatusOK)
}
