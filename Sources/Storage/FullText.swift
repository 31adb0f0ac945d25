import Foundation

/// Full-text search over one text column, the same call on both engines: SQLite's FTS5 (an
/// external-content index kept in step by triggers) or PostgreSQL's tsvector with a GIN index.
/// Both use the 'simple' rules: words are matched as written, case-insensitively, no stemming.
public enum FullText {
    /// Indexes `table.text`; `table` must have an integer `seq` key.
    public static func migration(service: String, version: Int, table: String) -> Migration {
        let fts = table + "_fts"
        return Migration(
            service: service, version: version,
            sqlite: [
                "CREATE VIRTUAL TABLE \(fts) USING fts5(text, content='\(table)', content_rowid='seq')",
                "INSERT INTO \(fts) (rowid, text) SELECT seq, text FROM \(table)",
                """
                CREATE TRIGGER \(fts)_insert AFTER INSERT ON \(table) BEGIN
                    INSERT INTO \(fts) (rowid, text) VALUES (new.seq, new.text);
                END
                """,
                """
                CREATE TRIGGER \(fts)_delete AFTER DELETE ON \(table) BEGIN
                    INSERT INTO \(fts) (\(fts), rowid, text) VALUES ('delete', old.seq, old.text);
                END
                """,
                """
                CREATE TRIGGER \(fts)_update AFTER UPDATE OF text ON \(table) BEGIN
                    INSERT INTO \(fts) (\(fts), rowid, text) VALUES ('delete', old.seq, old.text);
                    INSERT INTO \(fts) (rowid, text) VALUES (new.seq, new.text);
                END
                """,
            ],
            postgres: [
                "ALTER TABLE \(table) ADD COLUMN text_search tsvector GENERATED ALWAYS AS (to_tsvector('simple', text)) STORED",
                "CREATE INDEX \(table)_text_search ON \(table) USING GIN (text_search)",
            ])
    }

    /// A condition on `table` (unaliased) true for rows whose text holds every word of the
    /// query, with the query bound as placeholder `$n`; nil when the query has no words.
    public static func condition(dialect: SQLDialect, table: String, query: String, placeholder n: Int) -> (sql: String, bind: String)? {
        let words = query.split(whereSeparator: { !$0.isLetter && !$0.isNumber }).map(String.init)
        guard !words.isEmpty else { return nil }
        switch dialect {
        case .sqlite:
            // Each word quoted: user input never becomes FTS5 syntax.
            let match = words.map { "\"" + $0 + "\"" }.joined(separator: " ")
            return ("\(table).seq IN (SELECT rowid FROM \(table)_fts WHERE \(table)_fts MATCH $\(n))", match)
        case .postgres:
            return ("\(table).text_search @@ plainto_tsquery('simple', $\(n))", words.joined(separator: " "))
        }
    }
}
