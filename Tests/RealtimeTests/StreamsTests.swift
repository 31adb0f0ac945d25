import Foundation
import Realtime
import ServiceKit
import Testing
import TestSupport

@Suite("realtime: M3O streams")
struct StreamsTests {
    /// Subscribes with the M3O protocol: the first frame names the topic and carries a token.
    func subscribe(_ api: APIClient, topic: String, token: String) async throws -> WSClient {
        let c = try await WSClient(port: api.port, path: "/v1/streams/Subscribe")
        try await c.send(#"{"topic":"\#(topic)","token":"\#(token)"}"#)
        return c
    }

    @Test(arguments: Backend.all)
    func publishReachesSubscribersOfTheTopic(_ backend: Backend) async throws {
        try await withTestApp(backend) { api in
            let f = try await api.fixture()
            let topic = "\(f.groupID)/board"
            let t = try await api.post("streams/Token", ["topic": topic], token: f.member.token)
            #expect(t.status == .ok)
            let token = try #require(t["token"] as? String)
            let sub = try await subscribe(api, topic: topic, token: token)
            // Once the server has taken the subscription, publish on this topic and another.
            try await eventually("subscribed") { api.app.bus.connectionCount == 1 }
            #expect(try await api.post("streams/Publish", ["topic": f.groupID, "message": "elsewhere"], token: f.owner.token).status == .ok)
            #expect(try await api.post("streams/Publish", ["topic": topic, "message": "hello 👋"], token: f.owner.token).status == .ok)
            let frame = try await sub.nextAny()
            #expect(frame["topic"] as? String == topic)
            #expect(frame["message"] as? String == "hello 👋")
            #expect((frame["sent_at"] as? String)?.hasSuffix("Z") == true)
            #expect(frame.count == 3)
            await sub.close()
        }
    }

    @Test(arguments: Backend.all)
    func topicsAreEntitled(_ backend: Backend) async throws {
        try await withTestApp(backend) { api in
            let f = try await api.fixture()
            // Own id, own groups and their sub-topics: yes. Someone else's: no.
            for topic in [f.member.id, f.groupID, "\(f.groupID)/x/y", "\(f.member.id)/inbox"] {
                #expect(try await api.post("streams/Token", ["topic": topic], token: f.member.token).status == .ok, "\(topic)")
            }
            for topic in [f.owner.id, "some-topic", "\(f.owner.id)/inbox"] {
                let r = try await api.post("streams/Token", ["topic": topic], token: f.member.token)
                #expect(r.status == .forbidden, "\(topic)")
                #expect(r.isErrorShape)
            }
            #expect(try await api.post("streams/Publish", ["topic": f.groupID, "message": "x"], token: f.stranger.token).status == .forbidden)
            #expect(try await api.post("streams/Token", ["topic": "has space"], token: f.member.token).status == .badRequest)
            #expect(try await api.post("streams/Publish", ["topic": f.groupID, "message": "x"]).status == .unauthorized)
            // A service key may use any topic.
            let key = try await api.serviceKey()
            #expect(try await api.post("streams/Publish", ["topic": "any/topic", "message": "x"], token: key).status == .ok)
            #expect(try await api.post("streams/Token", ["topic": "any/topic"], token: key).status == .ok)
        }
    }

    @Test(arguments: Backend.all)
    func tokensAreForOneTopicAndOneUse(_ backend: Backend) async throws {
        try await withTestApp(backend) { api in
            let f = try await api.fixture()
            let token = try #require(try await api.post("streams/Token", ["topic": f.groupID], token: f.member.token)["token"] as? String)
            // Wrong topic: refused, and the token is spent.
            let wrong = try await subscribe(api, topic: f.member.id, token: token)
            #expect(try await wrong.closeCode() == 1008)
            let reused = try await subscribe(api, topic: f.groupID, token: token)
            #expect(try await reused.closeCode() == 1008)
            let forged = try await subscribe(api, topic: f.groupID, token: "forged")
            #expect(try await forged.closeCode() == 1008)
            let garbage = try await WSClient(port: api.port, path: "/v1/streams/Subscribe")
            try await garbage.send("hello")
            #expect(try await garbage.closeCode() == 1008)
        }
    }

    /// A token, and a feed ticket (which is one), is refused once its lifetime is over; the
    /// answer says when that is.
    @Test(arguments: Backend.all)
    func anExpiredTokenOrTicketIsRefused(_ backend: Backend) async throws {
        try await withTestApp(backend, configure: { $0.realtime.tokenLifetime = .seconds(2) }) { api in
            let f = try await api.fixture()
            let before = Timestamp.now()
            let t = try await api.post("streams/Token", ["topic": f.groupID], token: f.member.token)
            let ticket = try #require(try await api.post("streams/Token", token: f.member.token)["token"] as? String)
            let issued = ContinuousClock.now
            let token = try #require(t["token"] as? String)
            let expires = try #require((t["expires_at"] as? String).flatMap(Timestamp.init(rfc3339:)))
            // Milliseconds on the wire.
            #expect(expires >= before.adding(seconds: 1.999) && expires <= Timestamp.now().adding(seconds: 2.001))

            try await Task.sleep(until: issued + .milliseconds(2_300))
            let late = try await subscribe(api, topic: f.groupID, token: token)
            #expect(try await late.closeCode() == 1008)
            await #expect(throws: (any Error).self) { _ = try await WSClient(port: api.port, path: "/v1/events?ticket=\(ticket)") }
        }
    }

    /// A subscription lasts as long as the right to its topic: leaving the group ends one to the
    /// group's topics, signing out ends the session's; others carry on.
    @Test(arguments: Backend.all)
    func aSubscriptionEndsWithTheRightToItsTopic(_ backend: Backend) async throws {
        try await withTestApp(backend) { api in
            let f = try await api.fixture()
            func open(_ topic: String, as token: String) async throws -> WSClient {
                let t = try #require(try await api.post("streams/Token", ["topic": topic], token: token)["token"] as? String)
                return try await subscribe(api, topic: topic, token: t)
            }
            let board = try await open("\(f.groupID)/board", as: f.member.token)
            let own = try await open(f.member.id, as: f.member.token)
            let admins = try await open("\(f.groupID)/board", as: f.admin.token)
            try await eventually("subscribed") { api.app.bus.connectionCount == 3 }

            let removed = try await api.post("groups/RemoveMember", ["group_id": f.groupID, "member_id": f.member.id], token: f.owner.token)
            #expect(removed.status == .ok)
            #expect(try await board.closeCode() == 1008)
            // The member's own topic and the admin's subscription carry on.
            #expect(try await api.post("streams/Publish", ["topic": "\(f.groupID)/board", "message": "still on"], token: f.owner.token).status == .ok)
            #expect(try await admins.nextAny()["message"] as? String == "still on")
            #expect(try await api.post("streams/Publish", ["topic": f.member.id, "message": "for you"], token: f.member.token).status == .ok)
            #expect(try await own.nextAny()["message"] as? String == "for you")

            #expect(try await api.post("users/Logout", token: f.member.token).status == .ok)
            #expect(try await own.closeCode() == FeedCloseCode.signedOut)
            await admins.close()
        }
    }

    /// A socket that never subscribes is closed once the time allowed is over.
    @Test func aSocketThatNeverSubscribesIsDropped() async throws {
        try await withTestApp(.sqlite, configure: {
            $0.realtime.subscribeTimeout = .milliseconds(500)
            $0.realtime.closeTimeout = .milliseconds(300)
        }) { api in
            let f = try await api.fixture()
            let silent = try await StalledSocket.connect(port: api.port, path: "/v1/streams/Subscribe", token: f.member.token)
            let (_, code) = try await silent.drain(timeout: .seconds(10))
            #expect(code == nil || code == 1008)
        }
    }
}
