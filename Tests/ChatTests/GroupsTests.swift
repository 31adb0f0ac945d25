import Foundation
import Testing
import TestSupport

@Suite("groups: roles, membership, leaving")
struct GroupsTests {
    @Test(arguments: Backend.all)
    func createReadListUpdate(_ backend: Backend) async throws {
        try await withTestApp(backend) { api in
            let ada = try await api.signUp("Ada")
            let r = try await api.post("groups/Create", ["name": "  Book club 📚 ", "description": "Monthly"], token: ada.token)
            #expect(r.status == .ok)
            let g = try #require(r["group"] as? [String: Any])
            let id = try #require(g["id"] as? String)
            #expect(g["name"] as? String == "Book club 📚")
            #expect(g["owner_id"] as? String == ada.id)
            #expect(g["member_ids"] as? [String] == [ada.id])
            #expect(g["admin_ids"] as? [String] == [ada.id])

            let read = try await api.post("groups/Read", ["ids": [id, "nope"]], token: ada.token)
            #expect((read["groups"] as? [String: Any])?.keys.sorted() == [id])
            let list = try await api.post("groups/List", token: ada.token)
            #expect((list["groups"] as? [[String: Any]])?.map { $0["id"] as? String } == [id])
            let upd = try await api.post("groups/Update", ["id": id, "name": "Readers"], token: ada.token)
            #expect((upd["group"] as? [String: Any])?["name"] as? String == "Readers")
            #expect((upd["group"] as? [String: Any])?["description"] as? String == "Monthly")

            #expect(try await api.post("groups/Create", ["name": ""], token: ada.token).detail == "name: must not be empty")
            #expect(try await api.post("groups/Create", ["name": String(repeating: "n", count: 101)], token: ada.token).status == .badRequest)
        }
    }

    @Test(arguments: Backend.all)
    func strangersCannotLearnAGroupExists(_ backend: Backend) async throws {
        try await withTestApp(backend) { api in
            let f = try await api.fixture()
            let read = try await api.post("groups/Read", ["ids": [f.groupID]], token: f.stranger.token)
            #expect((read["groups"] as? [String: Any])?.isEmpty == true)
            // The same answer as for a group that does not exist.
            let real = try await api.post("groups/Update", ["id": f.groupID, "name": "x"], token: f.stranger.token)
            let fake = try await api.post("groups/Update", ["id": "no-such-group", "name": "x"], token: f.stranger.token)
            #expect(real.status == .notFound && fake.status == .notFound)
            #expect(real.detail == fake.detail)
            // A stranger cannot list someone else's groups.
            #expect(try await api.post("groups/List", ["member_id": f.owner.id], token: f.stranger.token).status == .forbidden)
        }
    }

    @Test(arguments: Backend.all)
    func membersManagementByRole(_ backend: Backend) async throws {
        try await withTestApp(backend) { api in
            let f = try await api.fixture()
            let newcomer = try await api.signUp("New")
            // A plain member may not add or remove others.
            #expect(try await api.post("groups/AddMember", ["group_id": f.groupID, "member_id": newcomer.id], token: f.member.token).status == .forbidden)
            // An admin may.
            #expect(try await api.post("groups/AddMember", ["group_id": f.groupID, "member_id": newcomer.id], token: f.admin.token).status == .ok)
            // Adding twice is harmless.
            #expect(try await api.post("groups/AddMember", ["group_id": f.groupID, "member_id": newcomer.id], token: f.admin.token).status == .ok)
            #expect(try await api.post("groups/AddMember", ["group_id": f.groupID, "member_id": "no-user"], token: f.admin.token).status == .notFound)
            #expect(try await api.post("groups/RemoveMember", ["group_id": f.groupID, "member_id": newcomer.id], token: f.member.token).status == .forbidden)
            #expect(try await api.post("groups/RemoveMember", ["group_id": f.groupID, "member_id": newcomer.id], token: f.admin.token).status == .ok)
            // Only the owner removes an admin; nobody removes the owner.
            let other = try await api.signUp("Other")
            try await api.add(other, to: f.groupID, by: f.owner, role: "admin")
            #expect(try await api.post("groups/RemoveMember", ["group_id": f.groupID, "member_id": other.id], token: f.admin.token).status == .forbidden)
            #expect(try await api.post("groups/RemoveMember", ["group_id": f.groupID, "member_id": other.id], token: f.owner.token).status == .ok)
            #expect(try await api.post("groups/RemoveMember", ["group_id": f.groupID, "member_id": f.owner.id], token: f.admin.token).status == .conflict)
            // Roles are the owner's to give.
            #expect(try await api.post("groups/SetRole", ["group_id": f.groupID, "member_id": f.member.id, "role": "admin"], token: f.admin.token).status == .forbidden)
            let bad = try await api.post("groups/SetRole", ["group_id": f.groupID, "member_id": f.member.id, "role": "king"], token: f.owner.token)
            #expect(bad.status == .badRequest)
        }
    }

    @Test(arguments: Backend.all)
    func leavingAndHandingOverOwnership(_ backend: Backend) async throws {
        try await withTestApp(backend) { api in
            let f = try await api.fixture()
            // A member leaves by removing themself (member_id omitted or their own).
            #expect(try await api.post("groups/RemoveMember", ["group_id": f.groupID], token: f.member.token).status == .ok)
            #expect(try await api.post("threads/ListConversations", ["group_id": f.groupID], token: f.member.token).status == .notFound)
            // The owner must hand over first.
            let stay = try await api.post("groups/RemoveMember", ["group_id": f.groupID], token: f.owner.token)
            #expect(stay.status == .conflict)
            #expect(stay.detail.contains("hand over ownership"))
            let handed = try await api.post("groups/SetRole", ["group_id": f.groupID, "member_id": f.admin.id, "role": "owner"], token: f.owner.token)
            #expect((handed["group"] as? [String: Any])?["owner_id"] as? String == f.admin.id)
            #expect(((handed["group"] as? [String: Any])?["admin_ids"] as? [String])?.contains(f.owner.id) == true)
            // Both changes are told: the new owner's and the old owner's (now an admin).
            let changes = try await api.database.read { conn in
                try await conn.query("SELECT payload FROM events WHERE type = 'member.role_changed' ORDER BY seq").map { try $0.string("payload") }
            }
            let handover = changes.suffix(2).compactMap { try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any] }
            #expect(Set(handover.map { "\($0["user_id"] as? String ?? "?")=\($0["role"] as? String ?? "?")" })
                    == ["\(f.owner.id)=admin", "\(f.admin.id)=owner"])
            #expect(try await api.post("groups/RemoveMember", ["group_id": f.groupID], token: f.owner.token).status == .ok)
            // Only the owner deletes; then the group is gone for everyone.
            #expect(try await api.post("groups/Delete", ["id": f.groupID], token: f.owner.token).status == .notFound)
            #expect(try await api.post("groups/Delete", ["id": f.groupID], token: f.admin.token).status == .ok)
            #expect(try await api.post("threads/ListConversations", ["group_id": f.groupID], token: f.admin.token).status == .notFound)
        }
    }

    @Test(arguments: Backend.all)
    func coMembersSeeEachOthersEmail(_ backend: Backend) async throws {
        try await withTestApp(backend) { api in
            let f = try await api.fixture()
            let r = try await api.post("users/Read", ["ids": [f.owner.id, f.stranger.id]], token: f.member.token)
            let users = try #require(r["users"] as? [String: [String: Any]])
            #expect(users[f.owner.id]?["email"] as? String == f.owner.email)
            #expect(users[f.stranger.id]?["email"] == nil)
            let byEmail = try await api.post("users/ReadByEmail", ["emails": [f.owner.email, f.stranger.email]], token: f.member.token)
            #expect((byEmail["users"] as? [String: Any])?.keys.sorted() == [f.owner.email])
        }
    }

    @Test(arguments: Backend.all)
    func serviceKeysActWithOwnerRights(_ backend: Backend) async throws {
        try await withTestApp(backend) { api in
            let key = try await api.serviceKey()
            let ada = try await api.signUp("Ada")
            let bob = try await api.signUp("Bob")
            #expect(try await api.post("groups/Create", ["name": "G"], token: key).detail == "owner_id: is required for a service key")
            let g = try await api.post("groups/Create", ["name": "G", "owner_id": ada.id], token: key)
            let id = try #require((g["group"] as? [String: Any])?["id"] as? String)
            #expect(try await api.post("groups/AddMember", ["group_id": id, "member_id": bob.id], token: key).status == .ok)
            let list = try await api.post("groups/List", ["member_id": bob.id], token: key)
            #expect((list["groups"] as? [Any])?.count == 1)
        }
    }
}
