// pgJDBC (the Debian libpostgresql-jdbc-java package) against eddy, as a
// Java application uses it: a batch of prepared INSERTs and an
// executeUpdate on the same statement, a prepared query with a parameter,
// DatabaseMetaData, and a rollback with autocommit off. PGHOST / PGPORT
// name the server.
import java.sql.*;
import java.util.*;
public class JdbcSession {
  public static void main(String[] a) throws Exception {
    String url = "jdbc:postgresql://" + System.getenv("PGHOST") + ":" + System.getenv("PGPORT") + "/eddy?user=eddy";
    try (Connection c = DriverManager.getConnection(url)) {
      try (Statement s = c.createStatement()) { s.execute("CREATE TABLE jb (id int, name text, score double precision)"); }
      try (PreparedStatement p = c.prepareStatement("INSERT INTO jb VALUES (?, ?, ?)")) {
        for (int i = 1; i <= 5; i++) { p.setInt(1, i); p.setString(2, "n" + i); p.setDouble(3, i * 1.5); p.addBatch(); }
        System.out.println("batch " + Arrays.toString(p.executeBatch()));
        p.setInt(1, 6); p.setString(2, "n6"); p.setDouble(3, 9.0);
        System.out.println("update " + p.executeUpdate());
      }
      try (PreparedStatement p = c.prepareStatement("SELECT id, name, score FROM jb WHERE id > ? ORDER BY id")) {
        p.setInt(1, 3);
        try (ResultSet r = p.executeQuery()) { while (r.next()) System.out.println("row " + r.getInt(1) + " " + r.getString(2) + " " + r.getDouble(3)); }
      }
      DatabaseMetaData md = c.getMetaData();
      System.out.println("product " + md.getDatabaseProductName() + " " + md.getDatabaseMajorVersion());
      try (ResultSet r = md.getTables(null, null, "jb", new String[]{"TABLE"})) { while (r.next()) System.out.println("table " + r.getString("TABLE_NAME")); }
      try (ResultSet r = md.getColumns(null, null, "jb", null)) { while (r.next()) System.out.println("column " + r.getString("COLUMN_NAME") + " " + r.getString("TYPE_NAME")); }
      c.setAutoCommit(false);
      try (Statement s = c.createStatement()) { s.executeUpdate("INSERT INTO jb VALUES (7, 'n7', 1)"); }
      c.rollback();
      try (Statement s = c.createStatement(); ResultSet r = s.executeQuery("SELECT count(*) FROM jb")) { r.next(); System.out.println("count " + r.getLong(1)); }
      c.commit();
    }
  }
}
